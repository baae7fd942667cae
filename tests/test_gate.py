"""Gate rules, verdicts, exit codes and the gate stage."""

from __future__ import annotations

import pytest

from harness.plugin.components import RunContext
from harness.suite.config import load_suite
from harness.errors import ConfigError
from harness.stages.gate import (
    Rule,
    decide,
    exit_code,
    pair_scores,
    parse_rule,
    per_gate_alpha,
    run_gates,
)
from harness.lib.stats import mcnemar
from harness.run.plan import plan_gates
from harness.types import (
    BenchmarkResult,
    Comparison,
    Decision,
    EvalError,
    ItemResult,
    RunResult,
    Verdict,
)


def comparison(low: float, high: float, *, baseline: float = 0.6, n: int = 200, alpha: float = 0.05) -> Comparison:
    """A hand-built comparison with the given interval (diff at its centre)."""
    return Comparison(
        test="hand",
        n=n,
        baseline=baseline,
        candidate=baseline + (low + high) / 2,
        diff=(low + high) / 2,
        ci_low=low,
        ci_high=high,
        p_value=0.5,
        mde=0.03,
        alpha=alpha,
    )


def result(model: str, scores: dict[str, float], benchmark: str = "support_intent") -> BenchmarkResult:
    items = tuple(ItemResult(item_id, "pred", "ref", score) for item_id, score in scores.items())
    return BenchmarkResult(benchmark, model, "accuracy", items, cache_key=f"key-{model}")


# ---------------------------------------------------------------------------- parse_rule


@pytest.mark.parametrize(
    "text, expected",
    [
        ("non_inferior()", Rule("non_inferior", 0.02)),
        ("superior()", Rule("superior", 0.0)),
        ("no_regression()", Rule("no_regression", 0.0)),
        ("non_inferior(margin=0.05)", Rule("non_inferior", 0.05)),
        ("  superior( margin = 0.01 )  ", Rule("superior", 0.01)),
        ("no_regression(margin=0)", Rule("no_regression", 0.0)),
        ("non_inferior(margin=0)", Rule("non_inferior", 0.0)),
        ("superior(margin=1e-2,)", Rule("superior", 0.01)),
    ],
)
def test_parse_rule_valid(text, expected):
    assert parse_rule(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("better_than(margin=0.1)", "unknown gate rule"),
        ("non_inferior", "unknown gate rule"),
        ("", "unknown gate rule"),
        ("non_inferior(delta=0.1)", "unknown argument"),
        ("superior(0.1)", "unknown argument"),
        ("non_inferior(margin=two)", "must be a number"),
        ("no_regression(margin=)", "must be a number"),
        ("non_inferior(margin=-0.01)", "must not be negative"),
    ],
)
def test_parse_rule_invalid(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_rule(text)


def test_rule_str_round_trips():
    rule = parse_rule("non_inferior(margin=0.05)")
    assert str(rule) == "non_inferior(margin=0.05)"
    assert parse_rule(str(rule)) == rule


# -------------------------------------------------------------------------------- decide


@pytest.mark.parametrize(
    "rule, low, high, verdict",
    [
        # non_inferior(0.02): pass when the lower bound is above -0.02, fail when the upper is below
        ("non_inferior(margin=0.02)", -0.015, 0.03, Verdict.PASS),
        ("non_inferior(margin=0.02)", -0.08, -0.03, Verdict.FAIL),
        ("non_inferior(margin=0.02)", -0.05, 0.01, Verdict.INCONCLUSIVE),
        ("non_inferior(margin=0.02)", -0.02, 0.05, Verdict.INCONCLUSIVE),  # boundary is not a pass
        # superior(0): pass on a lower bound above 0, fail when the upper bound is at or below 0
        ("superior()", 0.01, 0.09, Verdict.PASS),
        ("superior()", -0.06, -0.01, Verdict.FAIL),
        ("superior()", -0.04, 0.0, Verdict.FAIL),
        ("superior()", -0.02, 0.06, Verdict.INCONCLUSIVE),
        ("superior(margin=0.05)", 0.02, 0.09, Verdict.INCONCLUSIVE),
        ("superior(margin=0.05)", 0.06, 0.12, Verdict.PASS),
        # no_regression: fail only on evidence of a regression beyond the margin
        ("no_regression()", -0.06, -0.01, Verdict.FAIL),
        ("no_regression()", -0.06, 0.04, Verdict.PASS),
        ("no_regression()", 0.01, 0.04, Verdict.PASS),
        ("no_regression(margin=0.02)", -0.06, -0.01, Verdict.PASS),
        ("no_regression(margin=0.02)", -0.06, -0.03, Verdict.FAIL),
    ],
)
def test_decide(rule, low, high, verdict):
    got, reason = decide(parse_rule(rule), comparison(low, high))
    assert got is verdict
    assert reason


@pytest.mark.parametrize("rule", ["non_inferior(margin=0.02)", "no_regression()"])
@pytest.mark.parametrize("low, high", [(-0.01, 0.03), (-0.3, -0.2)])
def test_guard_rules_at_chance_are_inconclusive(rule, low, high):
    # baseline 0.26 on 57 items: its Wilson interval contains the 4-choice chance level 0.25
    cmp = comparison(low, high, baseline=0.26, n=57)
    verdict, reason = decide(parse_rule(rule), cmp, chance=0.25)
    assert verdict is Verdict.INCONCLUSIVE
    assert "chance" in reason


def test_guard_rule_above_chance_is_decided_normally():
    cmp = comparison(-0.01, 0.03, baseline=0.8, n=200)
    assert decide(parse_rule("non_inferior()"), cmp, chance=0.25)[0] is Verdict.PASS


def test_superior_is_not_affected_by_chance():
    cmp = comparison(0.05, 0.15, baseline=0.26, n=57)
    assert decide(parse_rule("superior()"), cmp, chance=0.25)[0] is Verdict.PASS


@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.01, 0.001])
def test_identical_candidate_is_never_a_failure(alpha):
    scores = [1 if i % 3 else 0 for i in range(100)]
    cmp = mcnemar(scores, list(scores), alpha=alpha)
    assert decide(parse_rule("non_inferior(margin=0.02)"), cmp)[0] is not Verdict.FAIL
    assert decide(parse_rule("no_regression()"), cmp)[0] is Verdict.PASS


def test_identical_candidate_passes_non_inferiority_at_005():
    # b = c = 0, n = 100: interval +-1.645/102 = +-0.016, inside the 0.02 margin
    scores = [1 if i % 3 else 0 for i in range(100)]
    cmp = mcnemar(scores, list(scores), alpha=0.05)
    assert decide(parse_rule("non_inferior(margin=0.02)"), cmp)[0] is Verdict.PASS


# ------------------------------------------------------------------------ exit code, alpha


def decision(verdict: Verdict, blocking: bool = True) -> Decision:
    return Decision("g", "b", "superior(margin=0)", verdict, "why", blocking)


@pytest.mark.parametrize(
    "verdicts, inconclusive_fails, code",
    [
        ([Verdict.PASS, Verdict.PASS], True, 0),
        ([Verdict.PASS, Verdict.FAIL], True, 1),
        ([Verdict.FAIL, Verdict.ERROR], True, 3),
        ([Verdict.ERROR], False, 3),
        ([Verdict.PASS, Verdict.INCONCLUSIVE], True, 1),
        ([Verdict.PASS, Verdict.INCONCLUSIVE], False, 0),
        ([Verdict.FAIL, Verdict.INCONCLUSIVE], False, 1),
        ([], True, 0),
    ],
)
def test_exit_code(verdicts, inconclusive_fails, code):
    assert exit_code([decision(v) for v in verdicts], inconclusive_fails) == code


@pytest.mark.parametrize("verdict", [Verdict.FAIL, Verdict.ERROR, Verdict.INCONCLUSIVE])
def test_exit_code_ignores_advisory_gates(verdict):
    decisions = [decision(Verdict.PASS), decision(verdict, blocking=False)]
    assert exit_code(decisions, inconclusive_fails=True) == 0


@pytest.mark.parametrize(
    "alpha, n, correction, expected",
    [(0.05, 1, "bonferroni", 0.05), (0.05, 2, "bonferroni", 0.025), (0.05, 5, "bonferroni", 0.01),
     (0.05, 0, "bonferroni", 0.05), (0.05, 5, "none", 0.05)],
)
def test_per_gate_alpha(alpha, n, correction, expected):
    assert per_gate_alpha(alpha, n, correction) == pytest.approx(expected)


# ---------------------------------------------------------------------------- pair_scores


def test_pair_scores_aligns_by_item_id():
    base = result("baseline", {"q1": 1, "q2": 0, "q3": 1})
    cand = result("candidate", {"q3": 0, "q1": 1, "q2": 1})  # other order
    assert pair_scores(base, cand) == ([1, 0, 1], [1, 1, 0])


def test_pair_scores_rejects_different_item_sets():
    base = result("baseline", {"q1": 1, "q2": 0, "q3": 1})
    cand = result("candidate", {"q1": 1, "q2": 1, "q4": 0})
    with pytest.raises(ValueError, match="2 items are not scored for both"):
        pair_scores(base, cand)


# ------------------------------------------------------------------------------ run_gates


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


@pytest.fixture
def loaded(harness_write_suite):
    path = harness_write_suite(
        {
            "name": "gates",
            "model": "smollm2-135m-instruct",
            "evaluate": {"intent": {"name": "support_intent"}, "mmlu": {"name": "mmlu"}},
            "gates": {
                "intent": "non_inferior(margin=0.02)",
                "knowledge": {"rule": "no_regression()", "benchmark": "mmlu", "blocking": False},
            },
        }
    )
    return load_suite(path)


def decide_gates(loaded, harness_registries, ctx, result: RunResult) -> list[Decision]:
    """The gate stage on the gates and statistics the run plan builds for ``loaded``."""
    gates, statistics = plan_gates(harness_registries, loaded, ctx)
    return run_gates(gates, statistics, loaded.suite.gating, result)


def run_result(loaded, benchmarks, eval_errors=()) -> RunResult:
    return RunResult(
        "run-1", loaded.suite.name, loaded.path, started_at=0.0,
        benchmarks=benchmarks, eval_errors=list(eval_errors),
    )


SCORES = {f"q{i:03d}": float(i % 3 != 0) for i in range(100)}


def by_gate(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.gate: d for d in decisions}


def test_run_gates_identical_results_pass(loaded, harness_registries, ctx):
    benchmarks = {
        label: {"baseline": result("baseline", SCORES), "candidate": result("candidate", SCORES)}
        for label in ("intent", "mmlu")
    }
    decisions = by_gate(decide_gates(loaded, harness_registries, ctx, run_result(loaded, benchmarks)))

    intent = decisions["intent"]
    assert intent.verdict is Verdict.PASS
    assert intent.blocking and intent.benchmark == "intent"
    assert intent.comparison is not None and intent.comparison.test == "mcnemar"
    # one blocking gate: Bonferroni leaves alpha alone; the advisory one does not count
    assert intent.comparison.alpha == pytest.approx(0.05)
    assert decisions["knowledge"].benchmark == "mmlu"
    assert not decisions["knowledge"].blocking


def test_run_gates_candidate_error_is_error(loaded, harness_registries, ctx):
    benchmarks = {
        "intent": {"baseline": result("baseline", SCORES), "candidate": result("candidate", SCORES)},
    }
    errors = [EvalError("intent", "candidate", "RuntimeError: out of memory")]
    decisions = by_gate(decide_gates(loaded, harness_registries, ctx, run_result(loaded, benchmarks, errors)))

    assert decisions["intent"].verdict is Verdict.ERROR
    assert "candidate: RuntimeError: out of memory" in decisions["intent"].reason


def test_run_gates_missing_candidate_is_error(loaded, harness_registries, ctx):
    benchmarks = {label: {"baseline": result("baseline", SCORES)} for label in ("intent", "mmlu")}
    decisions = decide_gates(loaded, harness_registries, ctx, run_result(loaded, benchmarks))

    assert [d.verdict for d in decisions] == [Verdict.ERROR, Verdict.ERROR]
    assert "no candidate" in decisions[0].reason


def test_run_gates_mismatched_items_is_error(loaded, harness_registries, ctx):
    fewer = dict(list(SCORES.items())[:-1])
    benchmarks = {"intent": {"baseline": result("baseline", SCORES), "candidate": result("candidate", fewer)}}
    decisions = by_gate(decide_gates(loaded, harness_registries, ctx, run_result(loaded, benchmarks)))

    assert decisions["intent"].verdict is Verdict.ERROR
    assert "not scored for both" in decisions["intent"].reason


def test_run_gates_chance_level_benchmark_is_inconclusive(loaded, harness_registries, ctx):
    at_chance = {f"m{i:02d}": float(i % 4 == 0) for i in range(60)}  # 0.25 on 4-choice MMLU
    benchmarks = {"mmlu": {"baseline": result("baseline", at_chance, "mmlu"),
                           "candidate": result("candidate", at_chance, "mmlu")}}
    decisions = by_gate(decide_gates(loaded, harness_registries, ctx, run_result(loaded, benchmarks)))

    assert decisions["knowledge"].verdict is Verdict.INCONCLUSIVE
    assert "chance" in decisions["knowledge"].reason


def test_run_gates_splits_alpha_over_blocking_gates(harness_write_suite, harness_registries, ctx):
    path = harness_write_suite(
        {
            "name": "two",
            "model": "smollm2-135m-instruct",
            "evaluate": {"a": "support_intent", "b": "support_intent"},
            "gates": {"a": "superior()", "b": "no_regression()"},
            "gating": {"alpha": 0.05},
        }
    )
    loaded = load_suite(path)
    graded = {k: v * 0.5 for k, v in SCORES.items()}  # 0 or 0.5: not binary -> bootstrap
    benchmarks = {
        "a": {"baseline": result("baseline", SCORES), "candidate": result("candidate", SCORES)},
        "b": {"baseline": result("baseline", graded), "candidate": result("candidate", graded)},
    }
    decisions = by_gate(decide_gates(loaded, harness_registries, ctx, run_result(loaded, benchmarks)))

    assert decisions["a"].comparison.alpha == pytest.approx(0.025)
    assert decisions["b"].comparison.alpha == pytest.approx(0.025)
    assert decisions["a"].comparison.test == "mcnemar"
    assert decisions["b"].comparison.test == "paired_bootstrap"
    # identical scores: no evidence either way for superiority, none of a regression
    assert decisions["a"].verdict is Verdict.INCONCLUSIVE
    assert decisions["b"].verdict is Verdict.PASS
