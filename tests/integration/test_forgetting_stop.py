"""suites/forgetting.yaml on the real SmolLM2, shortened, with ``forgetting.stop``: LoRA at a
learning rate high enough to forget ends early with ``bound_exceeded`` at a named step, while the
probes are scored live, and the run still selects and gates the best eligible checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main

SUITE = Path(__file__).resolve().parents[2] / "suites" / "forgetting.yaml"


@pytest.mark.integration
def test_a_forgetting_lora_stops_early_and_gates_the_best_eligible_checkpoint(tmp_path: Path, harness_write_suite) -> None:
    suite = yaml.safe_load(SUITE.read_text())
    suite["train"].update(learning_rate=6e-3, max_steps=20, eval_every=4, warmup_steps=0)
    probes = suite["forgetting"]["probes"]
    suite["forgetting"].update(
        probes={"domain": {**probes["domain"], "sample": 16}, "wikitext2": probes["wikitext2"]},
        bounds={"wikitext2": 0.25},
        stop={"when": "bound_exceeded"},
    )
    suite["data"][0]["sample"] = 160
    suite.update(evaluate={"wikitext2": suite["evaluate"]["wikitext2"]},
                 gates={"wikitext2": suite["gates"]["wikitext2"]}, report=["json", "markdown"])
    code = main(["run", str(harness_write_suite(suite)), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    (report,) = (tmp_path / "reports").iterdir()
    result = json.loads((report / "result.json").read_text())
    f = result["forgetting"]
    assert f["stop_when"] == "bound_exceeded" and f["stopped_step"] in (4, 8, 12, 16), f
    assert result["train"]["steps"] == f["stopped_step"] < 20
    assert "wikitext2 dropped beyond its bound 0.25" in f["stop_reason"]
    assert f["steps"][-1] == f["stopped_step"]
    # an earlier checkpoint stayed within the bound (on CPU: step 4, -0.20 nats; step 8 stopped
    # the run at -0.39): it is the one selected and gated
    selected = f["selected_step"]
    assert selected is not None and selected < f["stopped_step"], f["reasons"]
    assert f["reasons"][str(selected)].startswith("selected")
    assert f"checkpoint-{selected}" in result["models"]["candidate"]
    assert [d["gate"] for d in result["decisions"]] == ["wikitext2"] and code in (0, 1)
    assert f"stopped at step {f['stopped_step']}" in (report / "report.md").read_text()
