"""Power before the run: ``harness power`` and ``harness validate`` on gates that can and cannot
reach their margins."""

from __future__ import annotations

import math

import pytest

from harness.cli import main
from harness.lib.console import RunConsole
from harness.lib.stats import detectable_effect, needed_n, planning_sd


def test_power_formulas_hand_computed():
    # baseline 0.5, correlation 0.5: sd = sqrt(2 * .25 * .5) = 0.5
    sd = planning_sd(0.5, 0.5)
    assert sd == pytest.approx(0.5)
    z = 1.6448536269514722 + 0.8416212335729143  # z(0.95) + z(0.80)
    assert detectable_effect(sd, 100, 0.05) == pytest.approx(z * 0.5 / 10)
    assert needed_n(sd, 0.05, 0.05) == math.ceil((z * 0.5 / 0.05) ** 2)  # 619
    assert needed_n(sd, 0.0, 0.05) is None
    assert planning_sd(0.0) == 0.0


def _suite(harness_write_suite, tmp_path, require_power: bool, margin: float, sample: int):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    return harness_write_suite({
        "name": "power",
        "model": "smollm2-135m-instruct",
        # a gate needs a candidate arm: a system-prompt variant of the base model (nothing to train)
        "models": {"prompted": {"of": "base", "prompt": {"system": "Answer with the intent label."}}},
        "candidate": "prompted",
        "evaluate": {"intent": {"name": "support_intent", "sample": sample}},
        "gates": {"intent": f"no_regression(margin={margin})"},
        "gating": {"require_power": require_power, "assumed_baseline": 0.5},
    })


@pytest.mark.parametrize("command", ["validate", "power"])
def test_underpowered_blocking_gate_warns_then_errors_under_require_power(harness_write_suite, tmp_path, capsys, command):
    suite = _suite(harness_write_suite, tmp_path, False, 0.05, 40)
    assert main([command, str(suite), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "warning: blocking gate 'intent' cannot reach its margin 0.05 on 40 items" in out
    assert "it needs 619 items" in out  # alpha 0.05 (one blocking gate), baseline 0.5 (assumed)
    assert "baseline 0.500 (assumed)" in out

    strict = _suite(harness_write_suite, tmp_path, True, 0.05, 40)
    assert main([command, str(strict), "--store", str(tmp_path / "store")]) == 2
    assert "error: blocking gate 'intent' cannot reach its margin" in capsys.readouterr().out


def test_gate_with_enough_items_is_not_flagged(harness_write_suite, tmp_path, capsys):
    suite = _suite(harness_write_suite, tmp_path, True, 0.3, 40)
    assert main(["validate", str(suite), "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "cannot reach" not in out and "valid" in out


def test_baseline_from_the_store_when_it_has_the_evaluation(harness_write_suite, tmp_path):
    """Baseline results cached for this exact evaluation replace the assumption."""
    from harness.cli.common import load
    from harness.lib.models import resolve_model
    from harness.lib.store import Store
    from harness.run.plan import plan_run
    from harness.run.power import gate_power
    from harness.stages.evaluate import Evaluator

    suite = _suite(harness_write_suite, tmp_path, False, 0.05, 40)
    loaded, _pm, registries = load(suite)
    store_dir = tmp_path / "store"
    plan = plan_run(loaded, registries, store_dir / "work", store_dir=store_dir)
    bench = plan.benchmarks["intent"]
    spec = loaded.suite.model
    ref = resolve_model(spec.source, spec.backend, spec.dtype, loaded.dir)
    store = Store(store_dir)
    material = Evaluator(store, plan.backend, ref, RunConsole(quiet=True)).material(bench)
    items = bench.items()
    store.put_items("evaluate", material, {
        it["id"]: {"item_id": it["id"], "prediction": "", "reference": "", "score": float(k < 30)}
        for k, it in enumerate(items)
    })
    (row,) = gate_power(loaded, plan, store_dir)
    assert row.source == "store" and row.baseline == pytest.approx(0.75)
    assert row.n == 40
