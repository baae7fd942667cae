"""Every pair of arms with paired intervals, and the prompting-or-training rule, on constructed results."""

from __future__ import annotations

import pytest

from harness.lib.stats import clip_interval, mcnemar, paired_bootstrap
from harness.stages.pairs import PROMPTING_RULE, compare_arms, render_markdown
from harness.types import BenchmarkResult, ItemResult

N = 100
KINDS = {"zero_shot": "model", "shots_8": "prompting", "nearest_8": "prompting", "lora": "trained"}


def result(arm: str, correct: int, n: int = N, offset: int = 0) -> BenchmarkResult:
    """``correct`` of ``n`` items right: items ``offset .. offset + correct - 1`` (mod n)."""
    right = {(offset + i) % n for i in range(correct)}
    items = tuple(ItemResult(f"i{i:03d}", "", "", float(i in right)) for i in range(n))
    return BenchmarkResult("support_intent", arm, "exact_match", items, f"key-{arm}")


def run(scores: dict[str, int], kinds: dict[str, str] = KINDS, **kwargs):
    results = {arm: result(arm, correct, offset=7 * i) for i, (arm, correct) in enumerate(scores.items())}
    return compare_arms({"support_intent": results}, kinds, alpha=0.05, seed=0, **kwargs), results  # type: ignore[arg-type]


def test_every_pair_gets_the_gates_paired_interval_second_minus_first() -> None:
    cmp, results = run({"zero_shot": 30, "shots_8": 63, "nearest_8": 60, "lora": 64})
    assert [(p.first, p.second) for p in cmp.pairs] == [
        ("zero_shot", "shots_8"), ("zero_shot", "nearest_8"), ("zero_shot", "lora"),
        ("shots_8", "nearest_8"), ("shots_8", "lora"), ("nearest_8", "lora"),
    ]
    pair = cmp.pairs[2]
    base = [i.score for i in results["zero_shot"].items]
    cand = [i.score for i in results["lora"].items]
    assert pair.comparison == clip_interval(mcnemar(base, cand, 0.05))
    assert pair.comparison.diff == pytest.approx(0.34)


def test_the_rule_fires_when_the_trained_arm_is_within_the_margin_of_the_best_prompting_arm() -> None:
    cmp, _ = run({"zero_shot": 30, "shots_8": 63, "nearest_8": 60, "lora": 64})
    (decision,) = cmp.decisions
    assert decision.verdict == "consider prompting" and cmp.consider_prompting is True
    assert (decision.best_trained, decision.best_prompting) == ("lora", "shots_8")
    assert decision.gap == pytest.approx(0.01)
    assert "'lora' 0.640 is within 0.02 of best prompting arm 'shots_8' 0.630 (gap +0.010" in decision.reason
    assert not decision.settled and "cannot settle" in decision.reason  # 100 items cannot show a 2-point bound


def test_the_rule_does_not_fire_when_training_is_clearly_better() -> None:
    cmp, _ = run({"zero_shot": 30, "shots_8": 50, "nearest_8": 55, "lora": 85})
    (decision,) = cmp.decisions
    assert decision.verdict == "keep training" and cmp.consider_prompting is False
    assert decision.best_prompting == "nearest_8" and decision.gap == pytest.approx(0.30)
    assert decision.settled and decision.ci_low is not None and decision.ci_low > PROMPTING_RULE["margin"]
    assert "more than 0.02" in decision.reason and "settled by the interval" in decision.reason


def test_a_gap_of_exactly_the_margin_counts_as_within() -> None:
    cmp, _ = run({"zero_shot": 30, "shots_8": 64, "nearest_8": 10, "lora": 66})
    (decision,) = cmp.decisions
    assert decision.gap == pytest.approx(0.02) and decision.verdict == "consider prompting"
    cmp, _ = run({"zero_shot": 30, "shots_8": 64, "nearest_8": 10, "lora": 67})
    assert cmp.decisions[0].verdict == "keep training"


def test_tied_prompting_arms_go_to_the_one_named_first_and_prompting_may_beat_training() -> None:
    cmp, _ = run({"zero_shot": 30, "shots_8": 70, "nearest_8": 70, "lora": 60})
    (decision,) = cmp.decisions
    assert decision.best_prompting == "shots_8"
    assert decision.gap == pytest.approx(-0.10) and decision.verdict == "consider prompting"
    assert "'lora' 0.600 is more than 0.02 below best prompting arm 'shots_8' 0.700" in decision.reason
    # the gap's interval is trained - prompting even though the pair was made the other way round
    pair = next(p for p in cmp.pairs if (p.first, p.second) == ("shots_8", "lora"))
    assert pair.comparison is not None
    assert (decision.ci_low, decision.ci_high) == (pair.comparison.ci_low, pair.comparison.ci_high)
    reversed_kinds = {"lora": "trained", "nearest_8": "prompting", "shots_8": "prompting", "zero_shot": "model"}
    cmp, _ = run({"lora": 60, "nearest_8": 70, "shots_8": 70, "zero_shot": 30}, reversed_kinds)
    decision = cmp.decisions[0]
    assert decision.best_prompting == "nearest_8"
    assert decision.ci_high is not None and decision.ci_high < 0.05 and decision.settled


def test_a_benchmark_without_a_trained_result_is_not_applicable_and_its_pairs_say_why() -> None:
    results = {"zero_shot": result("zero_shot", 30), "shots_8": result("shots_8", 60)}
    cmp = compare_arms({"support_intent": results}, KINDS, alpha=0.05, seed=0)  # type: ignore[arg-type]
    (decision,) = cmp.decisions
    assert decision.verdict == "not applicable" and "no trained arm" in decision.reason
    assert cmp.consider_prompting is None
    missing = [p for p in cmp.pairs if p.comparison is None]
    assert len(missing) == 5 and all("no result for" in (p.error or "") for p in missing)


def test_items_that_do_not_pair_up_are_an_error_not_a_comparison() -> None:
    results = {"shots_8": result("shots_8", 60), "lora": result("lora", 60, n=90)}
    cmp = compare_arms({"b": results}, {"shots_8": "prompting", "lora": "trained"}, alpha=0.05, seed=0)
    assert cmp.pairs[0].comparison is None and "not scored for both" in (cmp.pairs[0].error or "")
    assert "no interval" in cmp.decisions[0].reason and not cmp.decisions[0].settled


def test_non_binary_scores_use_the_seeded_paired_bootstrap() -> None:
    def graded(arm: str, shift: float) -> BenchmarkResult:
        items = tuple(ItemResult(f"i{i}", "", "", ((i * 37) % 10) / 10 + shift * (i % 3)) for i in range(60))
        return BenchmarkResult("judge", arm, "score", items, arm)

    results = {"shots_8": graded("shots_8", 0.0), "lora": graded("lora", 0.1)}
    kinds = {"shots_8": "prompting", "lora": "trained"}
    cmp = compare_arms({"judge": results}, kinds, alpha=0.05, seed=3)  # type: ignore[arg-type]
    base = [i.score for i in sorted(results["shots_8"].items, key=lambda i: i.item_id)]
    cand = [i.score for i in sorted(results["lora"].items, key=lambda i: i.item_id)]
    assert cmp.pairs[0].comparison == paired_bootstrap(base, cand, 0.05, seed=3)
    assert cmp.pairs[0].comparison != paired_bootstrap(base, cand, 0.05, seed=4)
    assert cmp.decisions[0].verdict == "keep training"


def test_the_run_plans_statistics_give_the_same_comparison(harness_registries, tmp_path) -> None:
    from harness.plugin.components import RunContext

    ctx = RunContext(tmp_path, tmp_path)
    stats = {name: harness_registries.build("statistic", name, {}, ctx) for name in ("mcnemar", "paired_bootstrap")}
    plain, _ = run({"zero_shot": 30, "shots_8": 63, "nearest_8": 60, "lora": 64})
    planned, _ = run({"zero_shot": 30, "shots_8": 63, "nearest_8": 60, "lora": 64}, statistics=stats)
    assert [p.comparison for p in planned.pairs] == [p.comparison for p in plain.pairs]


def test_markdown_shows_every_pair_and_the_verdict() -> None:
    cmp, _ = run({"zero_shot": 30, "shots_8": 63, "nearest_8": 60, "lora": 64})
    text = render_markdown(cmp)
    assert "#### support_intent" in text and "90% interval" in text
    assert "| zero_shot | lora | 0.300 | 0.640 | +0.340 |" in text
    assert text.count("| mcnemar (n=100) |") == 6
    assert "**consider prompting**: best trained arm 'lora'" in text


def test_the_rule_is_the_chapters_two_points_from_the_one_rule_table() -> None:
    from harness.suite.advise import default_rules

    lora_close = next(r for r in default_rules() if r.id == "lora_close")
    assert PROMPTING_RULE == {"margin": 0.02} == {"margin": lora_close.thresholds["within"]}


def test_the_document_form_is_plain_json_with_every_pair_and_decision() -> None:
    import json

    from harness.stages.pairs import comparison_document

    cmp, _ = run({"zero_shot": 30, "shots_8": 63, "nearest_8": 60, "lora": 64})
    doc = json.loads(json.dumps(comparison_document(cmp)))
    assert doc["consider_prompting"] is True and doc["margin"] == 0.02
    assert len(doc["pairs"]) == 6 and doc["pairs"][2]["comparison"]["diff"] == pytest.approx(0.34)
    assert doc["decisions"][0]["verdict"] == "consider prompting" and doc["decisions"][0]["best_prompting"] == "shots_8"
