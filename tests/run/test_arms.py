"""Arms: named models a suite compares (folders, adapters, endpoints, prompt variants); the gates
compare the arms they name; bad arms are one-line errors at validate (exit 2); an endpoint that is
down makes its gates ``error`` (exit 3)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.lib.models import adapter_base_mismatch
from harness.stages.gate import paired_comparison
from harness.testing import run_suite
from harness.testing.fake_model import save_fake_model
from harness.types import Verdict

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
MMLU = {"name": "mmlu", "per_subject": 2, "subjects": ["anatomy", "virology", "astronomy"]}
INTENT = {"name": "support_intent", "sample": 4, "max_new_tokens": 3}


def _suite(model_dir: Path, **more: Any) -> dict[str, Any]:
    suite: dict[str, Any] = {
        "name": "arms",
        "model": {"source": str(model_dir), "backend": "hf"},
        "evaluate": {"mmlu": MMLU},
        "report": ["json"],
    }
    suite.update(more)
    return suite


def _validate(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", str(path), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def other_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two more fake models (other seeds): folders 'trained elsewhere'."""
    root = tmp_path_factory.mktemp("arms-models")
    return save_fake_model(root / "one", seed=1), save_fake_model(root / "two", seed=2)


@pytest.fixture(scope="module")
def adapter_dir(harness_fake_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peft LoRA adapter (non-zero weights) on the fake model, saved the way peft saves one."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(harness_fake_model_dir))
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    peft.get_peft_model(model, config).save_pretrained(str(folder))
    meta = json.loads((folder / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = str(harness_fake_model_dir)
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    return folder


# ------------------------------------------------------------------------------- running arms


def test_an_external_candidate_is_gated_without_training(tmp_path: Path, harness_fake_model_dir: Path, other_models) -> None:
    suite = _suite(harness_fake_model_dir, models={"other": str(other_models[0])}, candidate="other",
                   gates={"mmlu": "no_regression(margin=0.5)"}, report=["json", "markdown"])  # fmt: skip
    result = run_suite(suite, work_dir=tmp_path)
    [markdown] = tmp_path.glob("reports/*/report.md")
    assert "| candidate (other) |" in markdown.read_text() and "other: " in markdown.read_text()
    per_model = result.benchmarks["mmlu"]
    assert set(per_model) == {"baseline", "candidate"}
    assert per_model["baseline"].cache_key != per_model["candidate"].cache_key  # another model, another cache key
    assert result.models["baseline"].startswith("base: ") and result.models["candidate"].startswith("other: ")
    assert {label: arm["name"] for label, arm in result.arms.items()} == {"baseline": "base", "candidate": "other"}
    assert result.decisions[0].verdict is not Verdict.ERROR and result.exit_code in (0, 1)


def test_a_gate_compares_the_arms_it_names(tmp_path: Path, harness_fake_model_dir: Path, other_models) -> None:
    one, two = other_models
    gates = {
        "default": {"rule": "no_regression(margin=0.5)", "benchmark": "mmlu"},
        "pair": {"rule": "no_regression(margin=0.5)", "benchmark": "mmlu", "baseline": "one", "candidate": "two"},
    }
    suite = _suite(harness_fake_model_dir, models={"one": str(one), "two": str(two)}, candidate="one", gates=gates)
    result = run_suite(suite, work_dir=tmp_path)
    per_model = result.benchmarks["mmlu"]
    assert set(per_model) == {"baseline", "candidate", "two"}  # 'one' is the suite's candidate
    assert {label: arm["name"] for label, arm in result.arms.items()} == {"baseline": "base", "candidate": "one", "two": "two"}
    by_name = {d.gate: d for d in result.decisions}
    expected = paired_comparison(_statistics(), per_model["candidate"], per_model["two"], "auto", 0.05)
    pair = by_name["pair"].comparison
    assert pair is not None and pair.diff == pytest.approx(expected.diff)
    assert pair.baseline == pytest.approx(expected.baseline)
    default = by_name["default"].comparison
    assert default is not None
    assert default.baseline == pytest.approx(sum(i.score for i in per_model["baseline"].items) / len(per_model["baseline"].items))


def _statistics() -> dict[str, Any]:
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    registries = Registries.from_plugin_manager(get_plugin_manager(load_entrypoints=False))
    return {name: registries.get("statistic", name).cls(registries.get("statistic", name).cls.Config(), None)
            for name in ("mcnemar", "paired_bootstrap")}  # fmt: skip


def test_an_adapter_arm_is_its_base_with_the_adapter(tmp_path: Path, harness_fake_model_dir: Path, adapter_dir: Path) -> None:
    suite = _suite(harness_fake_model_dir, models={"external": {"adapter": str(adapter_dir), "backend": "hf"}},
                   candidate="external", gates={"mmlu": "no_regression(margin=0.5)"})  # fmt: skip
    result = run_suite(suite, work_dir=tmp_path)
    assert "+ adapter " in result.models["candidate"] and result.models["candidate"].startswith("external")
    base, cand = result.benchmarks["mmlu"]["baseline"], result.benchmarks["mmlu"]["candidate"]
    assert base.cache_key != cand.cache_key and len(cand.items) == len(base.items) == 6


def test_an_endpoint_that_is_down_errors_its_gates_and_exits_3(tmp_path: Path, harness_fake_model_dir: Path) -> None:
    prod = {"backend": "openai", "backend_options": {
        "url": f"http://127.0.0.1:{_closed_port()}/v1", "served_model": "prod", "max_retries": 0, "timeout_s": 5}}
    suite = _suite(harness_fake_model_dir, models={"prod": prod}, baseline="prod", candidate="base",
                   gates={"mmlu": "no_regression(margin=0.5)"})  # fmt: skip
    result = run_suite(suite, work_dir=tmp_path)
    assert result.exit_code == 3
    [decision] = result.decisions
    assert decision.verdict is Verdict.ERROR and "baseline:" in decision.reason
    assert [(e.benchmark, e.model) for e in result.eval_errors] == [("mmlu", "baseline")]
    assert "candidate" in result.benchmarks["mmlu"]  # the other arm is still evaluated


def test_a_prompt_variant_reuses_its_inner_model_and_keys_its_own_cache(tmp_path: Path, harness_fake_model_dir: Path, monkeypatch) -> None:
    from harness_plugins.backends.hf import HFBackend

    loads: list[str] = []
    real_load = HFBackend.load

    def counting_load(self: HFBackend, ref: Any, *, trainable: bool = False) -> Any:
        loads.append(ref.label)
        return real_load(self, ref, trainable=trainable)

    monkeypatch.setattr(HFBackend, "load", counting_load)
    data = [{"path": CSV, "format": "csv", "user": "{instruction}", "assistant": "{category}", "sample": 20, "seed": 3}]
    models = {"few2": {"of": "base", "prompt": {"shots": 2}}, "sys": {"of": "few2", "prompt": {"system": "Answer briefly."}}}
    suite = _suite(harness_fake_model_dir, data=data, models=models, candidate="few2", evaluate={"intent": INTENT},
                   gates={"intent": "no_regression(margin=0.5)", "sys": {"rule": "no_regression(margin=0.5)",
                          "benchmark": "intent", "baseline": "few2", "candidate": "sys"}})  # fmt: skip
    result = run_suite(suite, work_dir=tmp_path)
    per_model = result.benchmarks["intent"]
    assert set(per_model) == {"baseline", "candidate", "sys"}
    assert len({r.cache_key for r in per_model.values()}) == 3  # each variant has its own cache key
    assert "prompt {'shots': 2}" in result.models["candidate"] and "prompt {'system'" in result.models["sys"]
    assert loads == ["baseline"]  # loaded once: both variants run on the base model in memory
    assert not result.eval_errors


def test_a_variant_whose_examples_overflow_the_context_exits_2(tmp_path: Path, harness_fake_model_dir: Path, capsys) -> None:
    data = [{"path": CSV, "format": "csv", "user": "{instruction}", "assistant": "{response}", "sample": 200, "seed": 3}]
    suite = _suite(harness_fake_model_dir, data=data, models={"many": {"of": "base", "prompt": {"shots": 150}}},
                   candidate="many", evaluate={"intent": INTENT}, gates={"intent": "no_regression(margin=0.5)"})  # fmt: skip
    with pytest.raises(Exception) as caught:
        run_suite(suite, work_dir=tmp_path)
    assert getattr(caught.value, "exit_code", None) == 2
    message = str(caught.value)
    assert re.match(r".*suite.yaml:\d+: models.many.prompt: .*\d+ tokens", message) and "\n" not in message, message


# ------------------------------------------------------------------------ bad input: exit 2


def _expect_2(tmp_path: Path, capsys, harness_write_suite, suite: dict[str, Any], pattern: str) -> str:
    code, err, _out = _validate(harness_write_suite(suite), tmp_path, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    return err


def test_unknown_arm_names_the_line_and_the_known_arms(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    suite = _suite(harness_fake_model_dir, models={"one": "x"}, candidate="onee")
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: candidate: unknown arm 'onee'; available: base, one")


def test_an_unknown_gate_arm_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir, other_models) -> None:
    gates = {"mmlu": {"rule": "no_regression()", "baseline": "nope"}}
    suite = _suite(harness_fake_model_dir, models={"one": str(other_models[0])}, candidate="one", gates=gates)
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: gates.mmlu.baseline: unknown arm 'nope'")


def test_a_cycle_of_variants_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    models = {"a": {"of": "b", "prompt": {"system": "x"}}, "b": {"of": "a", "prompt": {"system": "y"}}}
    suite = _suite(harness_fake_model_dir, models=models, candidate="a")
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: models.a.of: a cycle of prompt variants: a -> b -> a")


def test_of_with_a_source_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    suite = _suite(harness_fake_model_dir, models={"a": {"of": "base", "source": "x", "prompt": {"system": "x"}}}, candidate="a")
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: models.a: .*uses its inner arm's model; it takes no source")


def test_trained_without_train_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    suite = _suite(harness_fake_model_dir, candidate="trained")
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: candidate: arm 'trained' needs a 'train' stage")


def test_a_reserved_arm_name_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    suite = _suite(harness_fake_model_dir, models={"base": "x"})
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: models.base: the name 'base' is reserved")


def test_gates_without_a_candidate_are_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    suite = _suite(harness_fake_model_dir, gates={"mmlu": "no_regression()"})
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: gates: nothing to gate")


def test_a_data_block_nothing_uses_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir, other_models) -> None:
    data = [{"path": CSV, "format": "csv", "user": "{instruction}", "assistant": "{category}"}]
    suite = _suite(harness_fake_model_dir, data=data, models={"one": str(other_models[0])}, candidate="one",
                   gates={"mmlu": "no_regression()"})  # fmt: skip
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: data: nothing uses it")


def test_an_adapter_for_another_base_names_both(tmp_path, capsys, harness_write_suite, harness_fake_model_dir, adapter_dir) -> None:
    other = tmp_path / "adapter-elsewhere"
    other.mkdir()
    for f in adapter_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    meta = json.loads((other / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
    (other / "adapter_config.json").write_text(json.dumps(meta))
    suite = _suite(harness_fake_model_dir, models={"ext": {"adapter": str(other)}}, candidate="ext")
    err = _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: models.ext.adapter: adapter .* was trained on")
    assert "'HuggingFaceTB/SmolLM2-360M-Instruct'" in err and repr(str(harness_fake_model_dir)) in err


def test_an_adapter_on_the_embedded_model_matches_by_hub_id(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    assert adapter_base_mismatch(tmp_path, "smollm2-135m-instruct", tmp_path) is None
    assert "not on the base model 'smollm2-360m'" in str(adapter_base_mismatch(tmp_path, "smollm2-360m", tmp_path))


def test_an_unset_api_key_variable_is_an_error(tmp_path, capsys, harness_write_suite, harness_fake_model_dir, monkeypatch) -> None:
    monkeypatch.delenv("ARMS_TEST_API_KEY", raising=False)
    prod = {"backend": "openai", "backend_options": {"url": "http://127.0.0.1:9/v1", "served_model": "p", "api_key_env": "ARMS_TEST_API_KEY"}}
    suite = _suite(harness_fake_model_dir, models={"prod": prod}, baseline="prod", candidate="base")
    _expect_2(tmp_path, capsys, harness_write_suite, suite, r"suite.yaml:\d+: models.prod: .*ARMS_TEST_API_KEY \(the API key\) is not set")


def test_an_arm_backend_without_loglikelihoods_is_refused(tmp_path, capsys, harness_write_suite, harness_fake_model_dir) -> None:
    prod = {"backend": "openai", "backend_options": {"url": "http://127.0.0.1:9/v1", "served_model": "p", "prompt_logprobs": False}}
    suite = _suite(harness_fake_model_dir, models={"prod": prod}, baseline="prod", candidate="base")
    _expect_2(tmp_path, capsys, harness_write_suite, suite,
              r"evaluate.mmlu: benchmark 'mmlu' needs loglikelihood, which backend 'openai' of arm 'prod' does not provide")  # fmt: skip


def test_a_declared_but_unused_arm_is_a_note(tmp_path, capsys, harness_write_suite, harness_fake_model_dir, other_models) -> None:
    suite = _suite(harness_fake_model_dir, models={"one": str(other_models[0]), "spare": str(other_models[1])}, candidate="one")
    code, err, out = _validate(harness_write_suite(suite), tmp_path, capsys)
    assert code == 0, err
    assert "models.spare: declared but no gate compares it" in out + err


# --------------------------------------------------------------------------- endpoint identity


def _echo_handler(served: dict[str, Any]) -> Any:
    """An OpenAI-compatible /models and echo /completions answering from ``served["model"]``."""
    import httpx
    import torch

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "prod"}]})
        model, ids = served["model"], json.loads(request.content)["prompt"]
        with torch.inference_mode():
            logits = model.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        names = [model.tokenizer.convert_ids_to_tokens(i) for i in ids]
        values = [None] + [float(logits[p - 1, ids[p]]) for p in range(1, len(ids))]
        tops = [None] + [{names[p]: values[p]} for p in range(1, len(ids))]
        logprobs = {"tokens": names, "token_logprobs": values, "top_logprobs": tops}
        return httpx.Response(200, json={"choices": [{"text": "", "logprobs": logprobs}]})

    return handler


def test_a_swapped_deployment_behind_the_same_url_misses_the_cache(tmp_path: Path, harness_fake_model_dir: Path, other_models, monkeypatch) -> None:
    import httpx

    from harness.lib.endpoint import EndpointClient
    from harness.lib.models import ModelRef, dir_fingerprint
    from harness.plugin.components import ComponentConfig, RunContext
    from harness_plugins.backends import openai as openai_backend
    from harness_plugins.backends.hf import HFBackend

    def load(folder: Path) -> Any:
        ref = ModelRef("x", folder, "hf", "float32", None, dir_fingerprint(folder))
        return HFBackend(ComponentConfig(), RunContext(tmp_path, tmp_path)).load(ref)

    served = {"model": load(harness_fake_model_dir)}
    transport = httpx.MockTransport(_echo_handler(served))
    monkeypatch.setattr(openai_backend, "EndpointClient", lambda spec: EndpointClient(spec, transport=transport))
    config = openai_backend.OpenAIConfig(url="http://prod.internal/v1", served_model="prod", max_retries=0)
    ref = ModelRef("baseline", harness_fake_model_dir, "openai", "float32", None, "tokenizer-only")

    def material() -> dict[str, Any]:  # each run builds its backend anew
        return openai_backend.OpenAIBackend(config, RunContext(tmp_path, tmp_path)).cache_material_for(ref)

    before = material()
    assert material() == before  # the same deployment: the same key
    served["model"] = load(other_models[0])  # new weights behind the same URL and model id
    after = material()
    assert after["served_models"] == before["served_models"] == ["prod"]
    assert after["probe"] != before["probe"] and after != before


def test_without_arms_a_training_suite_plans_base_and_trained_as_before(tmp_path: Path, harness_write_suite, harness_fake_model_dir) -> None:
    from harness.cli.common import load
    from harness.run.plan import plan_run

    data = [{"path": CSV, "format": "csv", "user": "{instruction}", "assistant": "{intent}", "sample": 20}]
    suite = _suite(harness_fake_model_dir, data=data, train={"name": "lora", "max_steps": 1}, gates={"mmlu": "no_regression()"})
    loaded, _pm, registries = load(harness_write_suite(suite))
    plan = plan_run(loaded, registries, tmp_path / "work")
    assert {name: (arm.label, arm.backend is plan.backend, arm.prompts) for name, arm in plan.arms.items()} == {
        "base": ("baseline", True, ()), "trained": ("candidate", True, ())}
    [gate] = plan.gates
    assert (gate.baseline, gate.candidate) == ("baseline", "candidate")
    assert plan.curate is not None and not plan.notes
