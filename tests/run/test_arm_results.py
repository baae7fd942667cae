"""A run with prompt variants records each prompting arm's prompt cost and every pair of arms
(tiny random model); ``harness advise`` reads the costs from the stored run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.testing import run_suite
from harness.tools.advise import read_advice
from harness.types import RunResult

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
INTENT = {"name": "support_intent", "sample": 6, "max_new_tokens": 3}


def _suite(model_dir: Path) -> dict[str, Any]:
    """Zero-shot, two seeded shots, and a system prompt on top of the shots; no training."""
    return {
        "name": "arm-results",
        "seed": 5,
        "model": {"source": str(model_dir), "backend": "hf"},
        "data": [{"path": CSV, "format": "csv", "split": "train", "sample": 20, "user": "{instruction}", "assistant": "{intent}"}],
        "models": {"few2": {"of": "base", "prompt": {"shots": 2}}, "sys": {"of": "few2", "prompt": {"system": "Answer briefly."}}},
        "candidate": "few2",
        "evaluate": {"intent": INTENT},
        "gates": {
            "intent": "no_regression(margin=0.5)",
            "sys": {"rule": "no_regression(margin=0.5)", "benchmark": "intent", "baseline": "few2", "candidate": "sys"},
        },
        "report": ["json", "markdown"],
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, harness_fake_model_dir: Path) -> tuple[Path, RunResult]:
    work = tmp_path_factory.mktemp("arm-results")
    return work, run_suite(_suite(harness_fake_model_dir), work_dir=work, use_cache=True)


def test_each_prompting_arm_gets_its_prompt_cost(first_run: tuple[Path, RunResult]) -> None:
    work, result = first_run
    costs = result.prompt_costs
    assert set(costs) == {"baseline", "candidate", "sys"}
    zero, few, sys = costs["baseline"], costs["candidate"], costs["sys"]
    assert zero.example_tokens == 0 and zero.context_share == 0 and zero.mean_input_tokens > 0
    assert few.example_tokens > 0 and few.mean_input_tokens > zero.mean_input_tokens + 0.5 * few.example_tokens
    assert sys.example_tokens > few.example_tokens and sys.mean_input_tokens > few.mean_input_tokens
    assert 0 < few.context_share < sys.context_share < 1
    doc = json.loads(next((work / "reports").glob("*/result.json")).read_text())
    assert doc["prompt_costs"]["candidate"] == {
        "example_tokens": few.example_tokens, "mean_input_tokens": few.mean_input_tokens, "context_share": few.context_share,
    }  # fmt: skip


def test_the_cost_is_what_prompt_cost_measures_on_the_items_asked(first_run: tuple[Path, RunResult], harness_fake_model_dir: Path) -> None:
    from harness.lib.model_api import model_api
    from harness.lib.models import ModelRef, resolve_model
    from harness.lib.prompting import PromptSpec, prompt_cost
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries
    from harness.run.plan import plan_run
    from harness.stages.curate import curate
    from harness.suite.config import load_suite

    work, result = first_run
    loaded = load_suite(work / "suite.yaml")
    pm = get_plugin_manager(load_entrypoints=False)
    plan = plan_run(loaded, Registries.from_plugin_manager(pm), work / "plan")
    assert plan.curate is not None
    pool = curate(plan.curate).records
    bench = plan.benchmarks["intent"]
    ref: ModelRef = resolve_model(str(harness_fake_model_dir), "hf", "auto", work)
    api = model_api(plan.backend.load(ref))
    expected = prompt_cost(api, PromptSpec(shots=2), pool, 5, [bench.item_messages(i) for i in bench.items()])
    assert result.prompt_costs["candidate"] == expected


def test_a_cached_rerun_loads_no_model_for_the_costs(first_run: tuple[Path, RunResult], harness_fake_model_dir: Path, monkeypatch) -> None:
    from harness_plugins.backends.hf import HFBackend

    work, result = first_run
    loads: list[str] = []
    monkeypatch.setattr(HFBackend, "load", lambda self, ref, **kw: loads.append(ref.label))
    again = run_suite(work / "suite.yaml", work_dir=work, use_cache=True)
    assert loads == [] and again.prompt_costs == result.prompt_costs


def test_the_run_compares_every_pair_of_its_three_arms(first_run: tuple[Path, RunResult]) -> None:
    work, result = first_run
    section = result.arm_pairs
    assert section is not None
    assert [(p["first"], p["second"]) for p in section["pairs"]] == [("baseline", "candidate"), ("baseline", "sys"), ("candidate", "sys")]
    assert all(p["comparison"]["n"] == 6 for p in section["pairs"])
    (decision,) = section["decisions"]
    assert decision["verdict"] == "not applicable" and "no trained arm" in decision["reason"]
    report = next((work / "reports").glob("*/report.md")).read_text()
    assert "### Arms compared" in report and "**not applicable**: no trained arm" in report


def test_advise_reads_the_context_share_from_the_run(first_run: tuple[Path, RunResult], capsys) -> None:
    work, result = first_run
    out = work / "advice.json"
    args = ["advise", str(work / "suite.yaml"), "--run", "latest", "--store", str(work / "store"), "--out", str(out),
            "--requests-per-month", "1000000", "--price-per-1k-input-tokens", "0.001"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    advice = read_advice(out)
    few = advice.measurements.arm("candidate")
    assert few.cost is not None and few.cost.context_share == result.prompt_costs["candidate"].context_share
    assert f"{100 * few.cost.context_share:.1f}%" in printed
    monthly = advice.economics.cost("candidate")
    assert monthly is not None and monthly.monthly_cost == pytest.approx(result.prompt_costs["candidate"].mean_input_tokens)
