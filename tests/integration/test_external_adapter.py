"""The CI job for a model trained elsewhere: a LoRA adapter trained with plain peft
(``examples/train_external_adapter.py``) gated against the base model served by the CPU vLLM
server (``suites/deployed_vs_candidate.yaml``); the exit code follows the gates and both arms are
in the result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.lib.serving import venv_dir, venv_python
from harness.stages.gate import exit_code
from harness.types import Decision, Verdict

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _example() -> object:
    spec = importlib.util.spec_from_file_location("train_external_adapter", ROOT / "examples" / "train_external_adapter.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adapter_trained_elsewhere_is_gated_against_the_deployed_model(tmp_path: Path) -> None:
    if not venv_python(venv_dir()).is_file():
        pytest.skip(f"the CPU vLLM server's venv {venv_dir()} is not built (make vllm-venv)")
    adapter = tmp_path / "adapters" / "support-lora"
    assert _example().main(["--out", str(adapter), "--steps", "8", "--batch-size", "4"]) == 0  # type: ignore[attr-defined]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    suite = yaml.safe_load((ROOT / "suites" / "deployed_vs_candidate.yaml").read_text())
    suite["models"]["external"]["adapter"] = str(adapter)
    suite["evaluate"]["support_intent"]["sample"] = 16
    suite["evaluate"]["hellaswag"]["sample"] = 16
    suite["report"] = ["json"]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))

    code = main(["run", str(path), "--reports", str(tmp_path / "reports"), "--store", str(tmp_path / "store")])
    [result_file] = (tmp_path / "reports").glob("*/result.json")
    doc = json.loads(result_file.read_text())
    assert doc["models"]["baseline"].startswith("deployed (via vllm_server)")
    assert doc["models"]["candidate"].startswith("external: ") and str(adapter) in doc["models"]["candidate"]
    for label in ("support_intent", "hellaswag"):
        assert set(doc["benchmarks"][label]) == {"baseline", "candidate"}, doc.get("eval_errors")
    decisions = [
        Decision(d["gate"], d["benchmark"], d["rule"], Verdict(d["verdict"]), d["reason"], d["blocking"])
        for d in doc["decisions"]
    ]
    assert {d.gate for d in decisions} == {"support_intent", "hellaswag"}
    assert all(d.verdict is not Verdict.ERROR for d in decisions), [d.reason for d in decisions]
    assert code == exit_code(decisions, inconclusive_fails=True)
