"""The described pipeline made executable: rendering, BOS, truncation, system prompt, sampling
precedence, parsers; and the template check's attribution of differences to causes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness_plugins.parity.template import TemplateCheck

from harness.lib.pipeline import API_DEFAULTS, Pipeline, Request, parse
from harness.suite.parity import (
    ParityGateSpec,
    ParitySpec,
    PipelineSpec,
    PostprocessSpec,
)
from harness.stages.parity import parity_decisions
from harness.types import CheckResult, Finding, Message, ParityResult, Verdict

REQ = Request("log.jsonl:1", (Message("user", "Ｃａｎ  I   cancel\tmy order?"),), "ORDER")


def pipe(model_dir: Path, tmp: Path | None = None, **spec) -> Pipeline:
    return Pipeline.build("p", PipelineSpec.model_validate(spec), model_dir, tmp or model_dir)


def test_render_adds_bos_before_a_template_that_already_starts_with_it(harness_embedded_model_dir: Path) -> None:
    plain, bos = pipe(harness_embedded_model_dir), pipe(harness_embedded_model_dir, add_bos=True)
    a, b = plain.render(REQ), bos.render(REQ)
    assert a.ids[0] == 1 and a.ids[1] != 1  # SmolLM2's template starts with <|im_start|>, its BOS
    assert b.ids == (1,) + a.ids
    assert a.text.endswith("<|im_start|>assistant\n")


def test_truncation_keeps_the_configured_side(harness_embedded_model_dir: Path) -> None:
    full = pipe(harness_embedded_model_dir).render(REQ)
    left = pipe(harness_embedded_model_dir, preprocess={"max_input_tokens": 10}).render(REQ)
    right = pipe(harness_embedded_model_dir, preprocess={"max_input_tokens": 10, "truncation_side": "right"}).render(REQ)
    assert left.truncated and left.full_length == len(full.ids)
    assert left.ids == full.ids[-10:] and right.ids == full.ids[:10]
    assert not full.truncated


def test_system_prompt_if_missing_or_replace(harness_embedded_model_dir: Path) -> None:
    with_system = Request("x", (Message("system", "theirs"), Message("user", "hi")))
    add = pipe(harness_embedded_model_dir, system_prompt="ours")
    replace = pipe(harness_embedded_model_dir, system_prompt="ours", system_prompt_mode="replace")
    assert add.messages(REQ)[0] == {"role": "system", "content": "ours"}
    assert add.messages(with_system)[0]["content"] == "theirs"
    assert replace.messages(with_system)[0]["content"] == "ours"
    assert len(replace.messages(with_system)) == 2


def test_preprocessing_normalises_and_collapses_whitespace(harness_embedded_model_dir: Path) -> None:
    p = pipe(harness_embedded_model_dir, preprocess={"normalize": "NFKC", "whitespace": "collapse"})
    assert p.messages(REQ)[0]["content"] == "Can I cancel my order?"
    assert pipe(harness_embedded_model_dir).messages(REQ)[0]["content"] == REQ.messages[0].content


def test_sampling_precedence_explicit_then_generation_config_then_api_defaults(harness_embedded_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "gen.json").write_text(json.dumps({"temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_new_tokens": 64}))
    p = pipe(harness_embedded_model_dir, tmp_path, sampling={"top_p": 0.5, "generation_config": "gen.json"})
    s = p.sampling
    assert s.values["temperature"] == 0.7 and s.sources["temperature"] == "generation_config"
    assert s.values["top_p"] == 0.5 and s.sources["top_p"] == "explicit"
    assert s.values["max_tokens"] == 64 and s.values["top_k"] == -1  # transformers' 0 is "off"
    assert s.values["repetition_penalty"] == API_DEFAULTS["repetition_penalty"] and s.sources["repetition_penalty"] == "default"
    unset = pipe(harness_embedded_model_dir).sampling
    assert unset.values["temperature"] == 1.0 and not unset.greedy  # the API default is not greedy
    greedy = pipe(harness_embedded_model_dir, sampling={"temperature": 0}).sampling
    assert greedy.differences(pipe(harness_embedded_model_dir, sampling={"temperature": 0, "top_p": 0.3}).sampling) == {}
    assert set(greedy.differences(s)) >= {"temperature", "top_p", "max_tokens"}
    with pytest.raises(Exception, match="generation_config: not found"):
        pipe(harness_embedded_model_dir, tmp_path, sampling={"generation_config": "missing.json"})


def test_parsers() -> None:
    schema = {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]}
    strict = PostprocessSpec(parser="json", field="category", schema=schema)
    assert parse(strict, '{"category": "ORDER"}').answer == "ORDER"
    assert not parse(strict, 'Sure! {"category": "ORDER"}').ok
    assert "schema" in (parse(strict, '{"category": 3}').error or "")
    lenient = PostprocessSpec(parser="lenient_json", field="category")
    assert parse(lenient, 'Sure! {"category": "ORDER"} done').answer == "ORDER"
    regex = PostprocessSpec(parser="regex", pattern=r"category: (\w+)")
    assert parse(regex, "The category: REFUND.").answer == "REFUND"
    assert not parse(regex, "no idea").ok
    with pytest.raises(ValueError, match="needs a 'pattern'"):
        PostprocessSpec(parser="regex")


def _template_findings(model_dir: Path, **production) -> dict[str, Finding]:
    off, prod = pipe(model_dir), pipe(model_dir, **production)
    ctx = SimpleNamespace(requests=[REQ], offline=off, production=prod, progress=lambda *a: None, endpoint=lambda: None)
    out = TemplateCheck(TemplateCheck.Config(), None).run(ctx)
    return {f.cause: f for f in out.findings}


def test_template_check_names_each_cause(harness_embedded_model_dir: Path) -> None:
    assert _template_findings(harness_embedded_model_dir) == {}
    assert set(_template_findings(harness_embedded_model_dir, system_prompt="other")) == {"system_prompt"}
    assert set(_template_findings(harness_embedded_model_dir, add_bos=True)) == {"double_bos"}
    assert set(_template_findings(harness_embedded_model_dir, add_generation_prompt=False)) == {"generation_prompt"}
    chatml_with_space = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n {% endfor %}<|im_start|>assistant\n"
    found = _template_findings(harness_embedded_model_dir, chat_template=chatml_with_space)
    assert set(found) == {"chat_template"}  # no default system prompt, a space after each turn
    assert "-<|im_start|>system" in found["chat_template"].evidence["diff"]
    ws = pipe(harness_embedded_model_dir).tokenizer.chat_template.replace("<|im_end|>' + '\n'", "<|im_end|>' + '\n\n'")
    assert set(_template_findings(harness_embedded_model_dir, chat_template=ws)) == {"whitespace"}


def test_parity_gates_fail_on_threshold_and_error_is_never_a_pass() -> None:
    spec = ParitySpec.model_validate({"requests": {"path": "x.jsonl"}, "gate": ParityGateSpec(fail_on="high")})
    medium = Finding("sampling", "sampling_params", "medium", "s", 1, 10)
    high = Finding("template", "double_bos", "high", "t", 10, 10)
    result = ParityResult(10, [
        CheckResult("template", "template", "findings", (high,)),
        CheckResult("sampling", "sampling", "findings", (medium,)),
        CheckResult("replay", "replay", "error", error="endpoint down"),
        CheckResult("preprocessing", "preprocessing", "ok"),
    ])
    verdicts = {d.gate: d.verdict for d in parity_decisions(spec, result)}
    assert verdicts == {
        "parity.template": Verdict.FAIL,
        "parity.sampling": Verdict.PASS,
        "parity.replay": Verdict.ERROR,
        "parity.preprocessing": Verdict.PASS,
    }
    spec_medium = spec.model_copy(update={"gate": ParityGateSpec(fail_on="medium")})
    assert {d.gate: d.verdict for d in parity_decisions(spec_medium, result)}["parity.sampling"] is Verdict.FAIL
