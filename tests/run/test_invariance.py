"""``harness.run.invariance``: a backend whose scores depend on padding is caught at exactly the
padded items, changed predictions and drifted log-probabilities apart; a real model (the tiny
Llama on ``hf``, float32) is batch-invariant; bad input is one clear error."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

import harness
from harness.cli import main
from harness.errors import ConfigError, HarnessError
from harness.lib.model_api import ChoiceRequest, GenerationConfig, ModelAPI, Scored, TokenizerFacts
from harness.lib.models import LoadedModel, ModelRef
from harness.plugin.components import Backend, Benchmark, ComponentConfig
from harness.run.invariance import parse_batch_sizes, run_invariance
from harness.suite.config import load_suite
from harness_plugins.benchmarks.mmlu import prompt

SUBJECTS = ["anatomy", "astronomy", "virology"]


class PaddingSensitiveAPI(ModelAPI):
    """Scores each continuation by a hash of its text; a request in a batch whose longest context
    is longer than its own (so it would be padded) gets its scores reversed (``reverse``: the
    prediction changes) or raised by 0.01 nats (``shift``: the prediction holds)."""

    def __init__(self, effect: str) -> None:
        self.effect = effect

    def choice_loglikelihoods(self, requests: Sequence[ChoiceRequest], batch_size: int = 8) -> list[list[Scored]]:
        if self.effect == "fail_at_1" and batch_size == 1:
            raise RuntimeError("no batches of 1")
        out: list[list[Scored]] = []
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            width = max(len(context) for context, _ in batch)
            for context, continuations in batch:
                scores = [-(zlib.crc32(f"{context}|{c}".encode()) % 1000) / 100 for c in continuations]
                if len(context) < width:
                    scores = scores[::-1] if self.effect == "reverse" else [s + 0.01 for s in scores]
                out.append([(s, False) for s in scores])
        return out

    def token_logprobs(self, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8) -> list[list[float]]:
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        raise NotImplementedError

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return list(text.encode())

    def tokenizer_facts(self) -> TokenizerFacts:
        return TokenizerFacts(1024, None, None)


class PaddingSensitiveConfig(ComponentConfig):
    effect: Literal["reverse", "shift", "fail_at_1"] = Field("reverse")


class PaddingSensitiveBackend(Backend[PaddingSensitiveConfig]):
    name = "padding_sensitive"
    Config = PaddingSensitiveConfig

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        return LoadedModel(ref, None, None, "float32", api=PaddingSensitiveAPI(self.config.effect))


class Unbatched(Benchmark):
    """A benchmark whose config has no ``batch_size``."""

    name = "unbatched"

    def items(self) -> list[dict[str, Any]]:
        return [{"id": "a"}]


class Plugin:
    @harness.hookimpl
    def harness_register_backends(self, registrar: Any) -> None:
        registrar.add(PaddingSensitiveBackend)

    @harness.hookimpl
    def harness_register_benchmarks(self, registrar: Any) -> None:
        registrar.add(Unbatched)


def _suite(model_dir: Path, backend: str = "hf", **backend_options: Any) -> dict[str, Any]:
    return {
        "name": "invariance",
        "model": {"source": str(model_dir), "backend": backend, "backend_options": backend_options, "dtype": "float32"},
        "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 4, "subjects": SUBJECTS}},
        "report": ["json"],
    }


def _padded(items: Sequence[dict[str, Any]], batch_size: int) -> list[str]:
    """The items the fake pads at ``batch_size``: shorter prompt than the longest in its batch."""
    padded = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        width = max(len(prompt(doc)) for doc in batch)
        padded += [doc["id"] for doc in batch if len(prompt(doc)) < width]
    return padded


@pytest.mark.parametrize("effect", ["reverse", "shift"])
def test_padding_sensitive_backend_is_caught_at_exactly_the_padded_items(
    effect: str, harness_write_suite, harness_register_plugin, harness_fake_model_dir: Path, tmp_path: Path
) -> None:
    registries = harness_register_plugin(Plugin())
    loaded = load_suite(harness_write_suite(_suite(harness_fake_model_dir, "padding_sensitive", effect=effect)))
    [finding] = run_invariance(loaded, registries, tmp_path / "work", batch_sizes=(1, 8))
    items = registries.build("benchmark", "mmlu", {"per_subject": 4, "subjects": SUBJECTS}, _ctx(tmp_path)).items()
    expected = _padded(items, 8)
    assert 0 < len(expected) < len(items) == finding.items == 12
    assert not finding.invariant and finding.batch_sizes == (1, 8)
    if effect == "reverse":
        assert (list(finding.changed), finding.drifted) == (expected, ())
        assert f"{len(expected)} of 12 predictions changed" in finding.line()
    else:
        assert (finding.changed, list(finding.drifted)) == ((), expected)
        assert finding.max_logprob_diff == pytest.approx(0.01)
        assert "beyond the log-prob tolerance" in finding.line()
    assert finding.to_json()["changed"] == list(finding.changed)


def test_an_item_alone_in_its_batch_is_never_padded(
    harness_write_suite, harness_register_plugin, harness_fake_model_dir: Path, tmp_path: Path
) -> None:
    registries = harness_register_plugin(Plugin())
    loaded = load_suite(harness_write_suite(_suite(harness_fake_model_dir, "padding_sensitive")))
    [finding] = run_invariance(loaded, registries, tmp_path / "work", batch_sizes=(1, 2), limit=1)
    assert finding.invariant and finding.items == 1 and finding.max_logprob_diff == 0.0


def test_tiny_model_on_hf_is_batch_invariant_in_float32(harness_write_suite, harness_registries, harness_tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_suite(harness_write_suite(_suite(harness_tiny_model_dir)))
    [finding] = run_invariance(loaded, harness_registries, tmp_path / "work", batch_sizes=(1, 8))
    assert finding.invariant, finding.line()
    assert finding.max_logprob_diff is not None and finding.max_logprob_diff < 1e-3


def test_cli_exit_code_and_bad_input(harness_write_suite, harness_tiny_model_dir: Path, capsys) -> None:
    path = harness_write_suite(_suite(harness_tiny_model_dir))
    assert main(["invariance", str(path), "--batch-sizes", "1,4", "--limit", "4"]) == 0
    assert "mmlu: batch sizes 1 and 4 agree on all 4 items" in capsys.readouterr().out
    assert main(["invariance", str(path), "--batch-sizes", "8"]) == 2
    assert "need at least two distinct sizes" in capsys.readouterr().err
    assert main(["invariance", str(path), "--benchmarks", "nope"]) == 2
    assert "no benchmark 'nope' under 'evaluate'" in capsys.readouterr().err


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("1, 8,16") == (1, 8, 16)
    for bad in ("1", "1,x", "0,8", "4,4"):
        with pytest.raises(ConfigError):
            parse_batch_sizes(bad)


def test_a_benchmark_without_a_batch_size_option_is_refused(harness_write_suite, harness_register_plugin, harness_fake_model_dir: Path, tmp_path: Path) -> None:
    registries = harness_register_plugin(Plugin())
    suite = {**_suite(harness_fake_model_dir, "padding_sensitive"), "evaluate": {"s": "unbatched"}}
    loaded = load_suite(harness_write_suite(suite))
    with pytest.raises(ConfigError, match=r"evaluate\.s: benchmark 'unbatched' has no 'batch_size' option"):
        run_invariance(loaded, registries, tmp_path / "work")


def _ctx(tmp_path: Path) -> Any:
    from harness.plugin.components import RunContext

    return RunContext(tmp_path, tmp_path / "work")


def test_suite_switch_reports_the_baselines_differences_as_an_advisory_finding(
    harness_run_suite, harness_fake_model_dir: Path, tmp_path: Path
) -> None:
    import json

    suite = {**_suite(harness_fake_model_dir, "padding_sensitive"), "gating": {"check_batch_invariance": True}, "report": ["json", "markdown", "html"]}
    result = harness_run_suite(suite, plugins=[("padding", Plugin())])
    [finding] = result.invariance
    assert finding.changed and finding.batch_sizes == (1, 8)
    assert result.exit_code == 0 and not result.plugin_errors  # advisory: no gate, no error
    assert any(s.stage == "invariance" and s.outcome == "ok" for s in result.stages)
    out = tmp_path / "reports" / result.run_id
    doc = json.loads((out / "result.json").read_text())
    assert doc["invariance"][0]["changed"] == list(finding.changed)
    markdown = (out / "report.md").read_text()
    assert "### Batch invariance (advisory)" in markdown and finding.changed[0] in markdown
    html = (out / "report.html").read_text()
    assert 'id="invariance"' in html and finding.changed[0] in html


def test_suite_switch_on_a_benchmark_without_a_batch_size_is_refused_by_the_plan(harness_run_suite, harness_fake_model_dir: Path) -> None:
    suite = {**_suite(harness_fake_model_dir, "padding_sensitive"), "evaluate": {"u": "unbatched"}, "gating": {"check_batch_invariance": True}}
    with pytest.raises(HarnessError, match=r"evaluate\.u: benchmark 'unbatched' has no 'batch_size' option"):
        harness_run_suite(suite, plugins=[("padding", Plugin())])


def test_suite_switch_that_cannot_run_is_an_error_never_a_pass(harness_run_suite, harness_fake_model_dir: Path) -> None:
    suite = {**_suite(harness_fake_model_dir, "padding_sensitive", effect="fail_at_1"), "gating": {"check_batch_invariance": True}}
    result = harness_run_suite(suite, plugins=[("padding", Plugin())])
    assert result.benchmarks["mmlu"]["baseline"].items  # evaluated at its own batch size
    assert result.exit_code == 3 and result.invariance == []
    assert "the batch invariance check" in result.plugin_errors[0] and "no batches of 1" in result.plugin_errors[0]
    assert any(s.stage == "invariance" and s.outcome == "error" for s in result.stages)


def test_a_sampled_benchmark_is_checked_greedy(harness_write_suite, harness_registries, harness_fake_model_dir: Path, tmp_path: Path) -> None:
    """support_intent with samples: 3 is compared at samples: 1 (one greedy answer per item)."""
    suite = {**_suite(harness_fake_model_dir), "evaluate": {"intent": {"name": "support_intent", "sample": 3, "samples": 3, "temperature": 1.0, "max_new_tokens": 4}}}
    loaded = load_suite(harness_write_suite(suite))
    [finding] = run_invariance(loaded, harness_registries, tmp_path / "work", batch_sizes=(1, 2))
    assert finding.items == 3 and finding.max_logprob_diff is None and finding.invariant, finding.line()
