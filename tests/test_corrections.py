"""Holm's step-down, clustered intervals, floor/ceiling guards and underpowered passes, each
checked against numbers worked out by hand."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from harness.lib.stats import clip_interval, design_effect, holm_levels, mcnemar, paired_bootstrap
from harness.plugin.components import RunContext
from harness.run.plan import plan_gates
from harness.stages.gate import Rule, decide, paired_comparison, run_gates, underpowered
from harness.suite.config import load_suite
from harness.types import BenchmarkResult, Decision, ItemResult, RunResult, Verdict
from harness_plugins.benchmarks.hellaswag import HellaSwag, HellaSwagConfig
from harness_plugins.statistics.paired import McNemar, PairedBootstrap, BootstrapConfig

Z95 = NormalDist().inv_cdf(0.95)


# ------------------------------------------------------------------------------ Holm


@pytest.mark.parametrize(
    "p, correction, expected, rejected",
    [
        # 3 tests: .01 <= .05/3 -> rejected; .02 <= .05/2 -> rejected; .04 <= .05 -> rejected
        ({"a": 0.01, "b": 0.02, "c": 0.04}, "holm", {"a": 0.05 / 3, "b": 0.025, "c": 0.05}, "abc"),
        # .03 > .05/2 stops the step-down: b and c keep .025 and are not rejected
        ({"a": 0.01, "b": 0.03, "c": 0.04}, "holm", {"a": 0.05 / 3, "b": 0.025, "c": 0.025}, "a"),
        ({"a": 0.01, "b": 0.02, "c": 0.04}, "bonferroni", {"a": 0.05 / 3, "b": 0.05 / 3, "c": 0.05 / 3}, "a"),
        ({"a": 0.01, "b": 0.02, "c": 0.06}, "none", {"a": 0.05, "b": 0.05, "c": 0.05}, "ab"),
    ],
)
def test_holm_levels_hand_computed(p, correction, expected, rejected):
    levels = holm_levels(p, 0.05, lambda k, level: p[k] <= level, correction)
    assert levels == pytest.approx(expected)
    assert {k for k in p if p[k] <= levels[k]} == set(rejected)


def _result(model: str, scores: dict[str, float]) -> BenchmarkResult:
    items = tuple(ItemResult(i, "", "", s) for i, s in scores.items())
    return BenchmarkResult("b", model, "accuracy", items, f"key-{model}")


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


def _two_gates(harness_write_suite, correction: str):
    return load_suite(harness_write_suite({
        "name": "family", "model": "smollm2-135m-instruct",
        "evaluate": {"intent": {"name": "support_intent"}, "mmlu": {"name": "mmlu"}},
        "gates": {"intent": "non_inferior(margin=0.02)", "mmlu": "superior()"},
        "gating": {"correction": correction},
    }))


@pytest.mark.parametrize("correction, mmlu_verdict", [("holm", Verdict.PASS), ("bonferroni", Verdict.INCONCLUSIVE)])
def test_holm_rejects_the_second_gate_at_the_full_level(harness_write_suite, harness_registries, ctx, correction, mmlu_verdict):
    """intent: identical scores on 100 items, Agresti-Min half-width 1.96*sqrt(1)/102 = 0.019 < 0.02,
    so it passes at 0.025.  mmlu: 4 wins, 0 losses: diff 4/102 = 0.039, se sqrt(5 - 16/102)/102 =
    0.0216, z = 1.82: a pass at 0.05 (1.645) but not at 0.025 (1.96).  Holm frees mmlu's level once
    intent is rejected; Bonferroni keeps both at 0.025."""
    loaded = _two_gates(harness_write_suite, correction)
    same = {f"q{i:03d}": float(i % 3 != 0) for i in range(100)}
    better = {k: 1.0 if i < 4 and v == 0 else v for i, (k, v) in enumerate(sorted(same.items(), key=lambda kv: kv[1]))}
    assert sum(better.values()) - sum(same.values()) == 4
    result = RunResult("r", "family", loaded.path, started_at=0.0, benchmarks={
        "intent": {"baseline": _result("baseline", same), "candidate": _result("candidate", same)},
        "mmlu": {"baseline": _result("baseline", same), "candidate": _result("candidate", better)},
    })
    gates, statistics = plan_gates(harness_registries, loaded, ctx)
    decisions = {d.gate: d for d in run_gates(gates, statistics, loaded.suite.gating, result)}
    assert decisions["intent"].verdict is Verdict.PASS
    assert decisions["intent"].comparison.alpha == pytest.approx(0.025)
    assert decisions["mmlu"].verdict is mmlu_verdict
    assert decisions["mmlu"].comparison.alpha == pytest.approx(0.05 if correction == "holm" else 0.025)


# ------------------------------------------------------------------------------ clusters


def test_design_effect_hand_computed():
    # deltas 1,1 | 0,0: mean 1/2; i.i.d. variance of the mean 1/12; cluster totals deviate by
    # +1 and -1, so the clustered variance is 2/1 * 2/16 = 1/4: design effect 3
    assert design_effect([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(3.0)
    assert design_effect([1, 1, 0, 0], None) == 1.0
    assert design_effect([1, 1, 0, 0], ["a", "b", "c", "d"]) == 1.0  # every item its own cluster
    assert design_effect([1, 0, 1, 0], ["a", "a", "b", "b"]) == 1.0  # clustered below i.i.d.: kept at 1


def test_clustered_mcnemar_hand_computed():
    """b=0, c=2 on 4 items: Agresti-Min diff (2.5-0.5)/6 = 1/3, variance (3 - 4/6)/36 = 7/108;
    times the design effect 3: half-width z*sqrt(7)/6.  p: exact 2*P(X<=0|2) = 0.5, clustered z=1
    gives 0.317; the larger is kept."""
    cmp = mcnemar([0, 0, 0, 0], [1, 1, 0, 0], 0.05, clusters=["a", "a", "b", "b"])
    plain = mcnemar([0, 0, 0, 0], [1, 1, 0, 0], 0.05)
    assert cmp.ci_low == pytest.approx(1 / 3 - Z95 * math.sqrt(7) / 6)
    assert cmp.ci_high == pytest.approx(min(1.0, 1 / 3 + Z95 * math.sqrt(7) / 6))
    assert plain.ci_low == pytest.approx(1 / 3 - Z95 * math.sqrt(7 / 3) / 6)
    assert cmp.p_value == pytest.approx(0.5)
    assert cmp.detail["design_effect"] == pytest.approx(3.0)
    assert cmp.mde == pytest.approx(plain.mde * math.sqrt(3))


def test_cluster_bootstrap_resamples_whole_clusters():
    # two clusters: a draw is (a,a), (a,b) or (b,b): means 1, 1/2, 0 only
    cmp = paired_bootstrap([0, 0, 0, 0], [1, 1, 0, 0], 0.05, resamples=400, clusters=["a", "a", "b", "b"])
    assert cmp.detail["clusters"] == 2.0
    assert (cmp.ci_low, cmp.ci_high) == (0.0, 1.0)
    assert cmp.diff == 0.5


def _hellaswag_scores(ctx, n: int = 400):
    bench = HellaSwag(HellaSwagConfig(sample=n, seed=0), ctx)
    clusters = bench.clusters()
    ids = [item["id"] for item in bench.items()]
    rng = random.Random(7)
    activity = {c: (rng.random(), rng.choice((-0.3, 0.0, 0.3))) for c in set(clusters.values())}
    base, cand = {}, {}
    for i in ids:
        skill, shift = activity[clusters[i]]
        base[i] = float(rng.random() < skill)
        cand[i] = float(rng.random() < min(1.0, max(0.0, skill + shift)))
    return clusters, base, cand


@pytest.mark.parametrize("statistic", [McNemar(McNemar.Config(), None), PairedBootstrap(BootstrapConfig(), None)])
def test_clustered_interval_on_hellaswag_is_at_least_as_wide(ctx, statistic):
    """Real HellaSwag items and their activity labels; scores drawn with an activity effect."""
    clusters, base, cand = _hellaswag_scores(ctx)
    assert 50 < len(set(clusters.values())) < 400
    stats = {"mcnemar": statistic, "paired_bootstrap": statistic}
    name = statistic.name
    plain = paired_comparison(stats, _result("baseline", base), _result("candidate", cand), name, 0.05)
    clustered = paired_comparison(stats, _result("baseline", base), _result("candidate", cand), name, 0.05, clusters)
    assert clustered.ci_high - clustered.ci_low >= plain.ci_high - plain.ci_low
    assert clustered.detail["design_effect"] > 1.0


# ------------------------------------------------------------------------------ honest passes


def _cmp(base: list[float], cand: list[float]):
    return paired_comparison({"mcnemar": McNemar(McNemar.Config(), None)}, _result("baseline", dict(zip(map(str, range(len(base))), base))),
                             _result("candidate", dict(zip(map(str, range(len(cand))), cand))), "mcnemar", 0.05)


def test_humaneval_guard_on_a_baseline_that_solves_nothing_is_inconclusive():
    """20 problems, none solved by either model: the forgetting suite's no_regression(0.05) guard."""
    cmp = _cmp([0.0] * 20, [0.0] * 20)
    verdict, reason = decide(Rule("no_regression", 0.05), cmp)
    assert verdict is Verdict.INCONCLUSIVE
    assert "floor (every item 0)" in reason and "cannot show forgetting" in reason
    assert cmp.ci_low == 0.0 and cmp.ci_high > 0  # clipped: a baseline at 0 cannot drop
    ceiling = _cmp([1.0] * 20, [1.0] * 20)
    assert decide(Rule("non_inferior", 0.05), ceiling)[0] is Verdict.INCONCLUSIVE
    assert ceiling.ci_high == 0.0


def test_underpowered_no_regression_pass_is_flagged_and_inconclusive_under_require_power():
    base = [float(i % 2) for i in range(40)]
    cmp = _cmp(base, base)
    rule = Rule("no_regression", 0.05)
    assert underpowered(rule, cmp)  # 40 items cannot see a 5-point drop
    verdict, reason = decide(rule, cmp)
    assert verdict is Verdict.PASS and reason.startswith("underpowered") and "can detect >=" in reason
    assert decide(rule, cmp, require_power=True)[0] is Verdict.INCONCLUSIVE
    shown = Decision("g", "b", str(rule), Verdict.PASS, reason, True, cmp, underpowered=True).shown
    assert shown == "pass (underpowered)"
    assert not underpowered(Rule("no_regression", 0.5), cmp)


def test_every_pass_states_its_detectable_effect():
    cmp = _cmp([float(i % 2) for i in range(400)], [float(i % 2) for i in range(400)])
    verdict, reason = decide(Rule("non_inferior", 0.1), cmp)
    assert verdict is Verdict.PASS and f"can detect >= {cmp.mde:.3f}" in reason


def test_clip_interval_keeps_bounds_inside_the_range():
    cmp = _cmp([0.0] * 10 + [1.0] * 10, [0.0] * 20)
    raw = mcnemar([0.0] * 10 + [1.0] * 10, [0.0] * 20, 0.05)
    assert raw.ci_low < -0.5 or cmp.ci_low >= -0.5
    assert cmp.ci_low >= -0.5 and cmp.ci_high <= 0.5
    assert clip_interval(raw) == cmp


def test_reports_show_an_underpowered_pass():
    import xml.etree.ElementTree as ET

    from harness.lib.reportview import gate_rows
    from harness_plugins.reporters.files import _gate_case

    cmp = _cmp([float(i % 2) for i in range(40)], [float(i % 2) for i in range(40)])
    rule = Rule("no_regression", 0.05)
    verdict, reason = decide(rule, cmp)
    decision = Decision("g", "b", str(rule), verdict, reason, True, cmp, underpowered=underpowered(rule, cmp))
    doc = decision.to_json()
    assert doc["underpowered"] is True
    assert gate_rows({"decisions": [doc]})[0].shown == "pass (underpowered)"  # markdown and HTML
    suite = ET.Element("testsuite")
    assert _gate_case(suite, doc, inconclusive_fails=True) == "passed"
    assert suite.find("testcase/system-out").text.startswith("pass (underpowered): no_regression")  # junit
