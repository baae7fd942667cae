"""``harness advise``: each of the chapter's rules fires on a case built for it, the traffic flips
the economic reasons, advice.json reads back, and the command advises on a stored run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError
from harness.lib.resultdoc import result_document
from harness.lib.store import Store
from harness.tools.advise import (
    Prices, PromptCost, Traffic, advise, default_rules, load_rules, measure_arms, read_advice, write_advice,
)
from harness.suite.advise import rules_table_markdown
from harness.types import BenchmarkResult, ItemResult, RunResult, TrainOutput

INTENTS = ("cancel_order", "track_order", "get_refund", "check_invoice")
N = 100


def _items(correct: int, malformed: int = 0) -> tuple[ItemResult, ...]:
    """N support-intent items: the first ``correct`` right, the next ``malformed`` not a label."""
    items = []
    for i in range(N):
        ref = INTENTS[i % len(INTENTS)]
        if i < correct:
            pred = ref
        elif i < correct + malformed:
            pred = f"The intent is {ref}."
        else:
            pred = INTENTS[(i + 1) % len(INTENTS)]
        items.append(ItemResult(f"item{i}", pred, ref, float(pred == ref), category=ref))
    return tuple(items)


def _run(scores: dict[str, tuple[int, int]], examples: int = 400, train_seconds: float = 3600.0) -> RunResult:
    """A finished run of support_intent on the arms ``scores`` names (arm -> correct, malformed)."""
    result = RunResult("advise-run", "advise", Path("suite.yaml"), time.time())
    result.train = TrainOutput(Path("adapter"), 50, examples, 10_000, 2.0, 0.5, train_seconds)
    result.benchmarks["intent"] = {
        arm: BenchmarkResult("support_intent", arm, "exact_match", _items(*counts), f"k-{arm}")
        for arm, counts in scores.items()
    }
    return result


def _costs(share: float = 0.1, few_tokens: float = 400.0) -> dict[str, PromptCost]:
    return {
        "base": PromptCost(0, 100, 0.0),
        "shots5": PromptCost(few_tokens - 100, few_tokens, share),
    }


def _advice(result: RunResult, costs=None, traffic=None, prices=None, rules=None):
    measured = measure_arms(result, costs=_costs() if costs is None else costs)
    return advise(measured, traffic or Traffic(), prices or Prices(), rules or default_rules())


def _reason(advice, rule: str):
    return next(r for r in advice.reasons if r.rule == rule)


def test_few_labelled_examples_recommend_prompting_first() -> None:
    advice = _advice(_run({"base": (50, 0), "shots5": (70, 0), "trained": (90, 0)}, examples=60))
    assert (advice.recommendation, advice.decided_by, advice.arm) == ("prompting", "few_examples", "shots5")
    assert _reason(advice, "few_examples").measured == 60 and "60 labelled examples" in _reason(advice, "few_examples").text


def test_examples_over_30_percent_of_the_context_recommend_fine_tuning() -> None:
    result = _run({"base": (50, 0), "shots5": (70, 0), "trained": (90, 0)})
    advice = _advice(result, costs=_costs(share=0.42))
    assert (advice.recommendation, advice.decided_by, advice.arm) == ("lora", "context_share", "trained")
    assert "42.0% of the context" in _reason(advice, "context_share").text
    assert _advice(result, costs=_costs(share=0.2)).decided_by != "context_share"


def test_lora_within_two_points_of_few_shot_recommends_considering_prompting() -> None:
    advice = _advice(_run({"base": (50, 0), "shots5": (80, 0), "trained": (81, 0)}))
    reason = _reason(advice, "lora_close")
    assert (advice.recommendation, advice.decided_by) == ("prompting", "lora_close")
    assert reason.measured == pytest.approx(0.01) and "+1.0 points" in reason.text and "CI" in reason.text
    assert "within 2 points: consider prompting" in reason.text
    below = _reason(_advice(_run({"base": (50, 0), "shots5": (80, 0), "trained": (60, 0)})), "lora_close")
    assert below.outcome == "fired" and "more than 2 points below it: consider prompting" in below.text
    far = _advice(_run({"base": (50, 0), "shots5": (70, 0), "trained": (81, 0)}))
    assert _reason(far, "lora_close").outcome == "held" and far.recommendation == "lora"


def test_format_failures_despite_examples_recommend_fine_tuning() -> None:
    advice = _advice(_run({"base": (40, 30), "shots5": (70, 12), "trained": (71, 0)}))
    reason = _reason(advice, "format_failures")
    assert (advice.recommendation, advice.decided_by) == ("lora", "format_failures")
    assert reason.measured == pytest.approx(0.12) and "12/100" in reason.text and "shots5" in reason.text
    assert advice.measurements.arm("base").format_failures == 30
    assert advice.measurements.arm("trained").format_failures == 0


def test_traffic_flips_the_economic_reasons() -> None:
    result = _run({"base": (50, 0), "shots5": (85, 0), "trained": (90, 0)})
    prices = Prices(per_1k_input_tokens=0.0005, gpu_hour=2.0)
    costs = _costs(few_tokens=1500)
    busy = _advice(result, costs, Traffic(10_000_000), prices)
    quiet = _advice(result, costs, Traffic(1_000), prices)
    assert _reason(busy, "break_even").outcome == "fired" and _reason(quiet, "break_even").outcome == "held"
    assert _reason(busy, "traffic").outcome == "fired" and _reason(quiet, "traffic").outcome == "held"
    # 10M requests x 1.4k tokens saved x 0.0005 per 1k = 7000/month; one GPU-hour at 2.0 pays back in minutes
    assert busy.economics.monthly_saving == pytest.approx(7000.0)
    assert busy.economics.cost("shots5").monthly_cost == pytest.approx(7500.0)
    assert busy.economics.break_even_days == pytest.approx(2.0 / 7000.0 * 365.25 / 12)
    assert quiet.economics.break_even_days == pytest.approx(2.0 / 0.7 * 365.25 / 12)


def test_a_trained_arm_that_saves_nothing_never_pays_back_and_advice_json_reads_back(tmp_path: Path) -> None:
    result = _run({"base": (50, 0), "shots5": (85, 3), "trained": (90, 0)})
    costs = {**_costs(), "trained": PromptCost(0, 500, 0.0, output_tokens=4)}
    advice = _advice(result, costs, Traffic(2_000_000), Prices(0.001, 0.002, 3.0))
    assert math.isinf(advice.economics.break_even_days)
    assert "never pays back" in _reason(advice, "break_even").text
    path = write_advice(advice, tmp_path / "advice.json")
    assert "Infinity" in path.read_text() and json.loads(path.read_text())["summary"] == advice.summary
    assert read_advice(path) == advice


def test_rule_overrides_change_the_thresholds_and_unknown_names_are_one_line_errors(tmp_path: Path) -> None:
    rules = load_rules({"few_examples": {"min_examples": 50}})
    advice = _advice(_run({"base": (50, 0), "shots5": (70, 0), "trained": (90, 0)}, examples=60), rules=rules)
    assert _reason(advice, "few_examples").outcome == "held"
    assert _reason(advice, "few_examples").thresholds == {"min_examples": 50}
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  few_examples: {max_examples: 3}\n")
    with pytest.raises(ConfigError, match=r"rules\.yaml:2: rule 'few_examples' has no threshold 'max_examples'"):
        load_rules(rules_file=bad)
    assert "| 1 | `few_examples` |" in rules_table_markdown(default_rules())


def _stored_suite(tmp_path: Path, deployment: dict | None = None, advise_block: dict | None = None) -> Path:
    result = _run({"base": (50, 0), "shots5": (80, 2), "trained": (90, 0)})
    doc = result_document(result)
    doc["prompt_costs"] = {
        "base": {"example_tokens": 0, "mean_input_tokens": 100, "context_share": 0.0},
        "shots5": {"example_tokens": 1100, "mean_input_tokens": 1200, "context_share": 0.13},
    }
    store = Store(tmp_path / "store")
    store.start_run(result.run_id, "advise", tmp_path / "suite.yaml")
    store.save_result(result.run_id, "advise", doc)
    store.close()
    suite = {"name": "advise", "model": "smollm2-135m-instruct"}
    if deployment:
        suite["deployment"] = deployment
    if advise_block:
        suite["advise"] = advise_block
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_cli_advises_on_a_stored_run(tmp_path: Path, capsys) -> None:
    suite = _stored_suite(tmp_path, {"requests_per_month": 5_000_000, "price_per_1k_input_tokens": 0.0005, "gpu_hour_price": 2.5})
    out = tmp_path / "advice.json"
    code = main(["advise", str(suite), "--run", "latest", "--store", str(tmp_path / "store"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for arm in ("base", "shots5", "trained"):
        assert arm in printed
    assert "Recommendation: lora (arm trained), decided by rule break_even" in printed
    advice = read_advice(out)
    assert advice.traffic.requests_per_month == 5_000_000 and advice.economics.cost("shots5").monthly_cost == pytest.approx(3000.0)
    assert main(["advise", str(suite), "--run", "latest", "--store", str(tmp_path / "store"), "--out", str(out),
                 "--requests-per-month", "100"]) == 0
    assert "decided by the best score" in capsys.readouterr().out


def test_cli_names_a_bad_rules_file_in_one_line(tmp_path: Path, capsys) -> None:
    suite = _stored_suite(tmp_path)
    bad = tmp_path / "bad-rules.yaml"
    bad.write_text("rules:\n  no_such_rule: {x: 1}\n")
    code = main(["advise", str(suite), "--run", "latest", "--store", str(tmp_path / "store"), "--rules", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"harness: error: {bad}:2: unknown advise rule 'no_such_rule'")
    other = tmp_path / "overridden"
    other.mkdir()
    suite = _stored_suite(other, advise_block={"rules": {"few_examples": {"min_examples": 500}, "lora_close": {"within_points": 2}}})
    assert main(["advise", str(suite), "--run", "latest", "--store", str(other / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"harness: error: {suite}:") and "rule 'lora_close' has no threshold 'within_points'" in err


def test_the_docs_show_the_shipped_rules() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "advise.md").read_text()
    assert rules_table_markdown(default_rules()) in page


def test_the_arms_advise_adds_to_a_suite(tmp_path: Path) -> None:
    from harness.suite.config import Suite, load_suite
    from harness.tools.advise.arms import arms_block, arms_gates, arms_suite, full_suite

    assert arms_block((5, 20)) == {
        "shots5": {"of": "base", "prompt": {"shots": 5}},
        "shots20": {"of": "base", "prompt": {"shots": 20}},
    }
    gate = arms_gates(["shots5"], "intent")["advise_shots5"]
    assert (gate["baseline"], gate["candidate"], gate["benchmark"], gate["blocking"]) == ("shots5", "trained", "intent", False)
    path = tmp_path / "suite.yaml"
    suite = {
        "name": "arms", "model": "smollm2-135m-instruct",
        "train": {"name": "lora", "r": 4, "max_steps": 3, "learning_rate": 0.001},
        "evaluate": {"intent": "support_intent", "mmlu": "mmlu"},
        "gates": {"intent": {"rule": "superior()"}},
    }
    path.write_text(yaml.safe_dump(suite))
    loaded = load_suite(path)
    full = full_suite(loaded).suite
    assert full.train is not None and (full.train.name, full.train.options) == ("full", {"max_steps": 3})
    assert list(full.evaluate) == ["intent"] and full.gates == {}
    if "models" not in Suite.model_fields:  # a harness without suite arms says so in one line
        with pytest.raises(ConfigError, match=r"suite\.yaml: harness advise without --run needs suite arms"):
            arms_suite(loaded)
    else:
        arms = arms_suite(loaded, (5, 20)).suite
        assert {"shots5", "shots20"} <= set(arms.models) and {"advise_shots5", "advise_shots20", "intent"} <= set(arms.gates)


def test_arm_kinds_are_read_from_the_run_s_model_descriptions() -> None:
    from harness.tools.advise.measure import arm_kind, is_run_trained, prompt_examples

    doc = {"models": {
        "baseline": "base: /models/smollm2 [4788dcb02d1a]",
        "candidate": "trained: /models/smollm2 + adapter [99aa]",
        "shots5": "shots5 (prompt {'shots': 5}): /models/smollm2 [4788dcb02d1a]",
        "prod": "prod (via openai): http://serving/v1 [77]",
    }}
    kinds = {label: arm_kind(label, doc) for label in doc["models"]}
    assert kinds == {"baseline": "prompting", "candidate": "lora", "shots5": "prompting", "prod": "prompting"}
    assert arm_kind("candidate", doc, trained="full") == "full"
    assert arm_kind("candidate", {"models": {"candidate": "/models/x [12]"}}) == "lora"  # a run from before arms
    assert arm_kind("prod", {**doc, "arms": {"prod": {"kind": "lora"}}}) == "lora"
    assert [prompt_examples(label, doc) for label in ("baseline", "shots5")] == [0, 5]
    assert [is_run_trained(label, doc) for label in ("candidate", "prod")] == [True, False]


def test_a_stored_full_fine_tuning_run_joins_as_the_full_arm(tmp_path: Path, capsys) -> None:
    suite = _stored_suite(tmp_path)
    full = _run({"baseline": (50, 0), "candidate": (95, 0)}, train_seconds=7200.0)
    full.run_id = "full-run"
    store = Store(tmp_path / "store")
    store.start_run(full.run_id, "advise", suite)
    store.save_result(full.run_id, "advise", result_document(full))
    store.close()
    out = tmp_path / "advice.json"
    args = ["advise", str(suite), "--run", "advise-run", "--full-run", "full-run", "--store", str(tmp_path / "store"), "--out", str(out)]
    assert main(args) == 0
    advice = read_advice(out)
    arm = advice.measurements.arm("full")
    assert (arm.kind, arm.score, arm.train_seconds) == ("full", 0.95, 7200.0)
    assert advice.measurements.best == "full" and advice.measurements.arm("trained").vs_best.n == N
    assert "full" in capsys.readouterr().out
    assert main([*args[:4], "--full", "--store", str(tmp_path / "store")]) == 2
    assert "with --run, name a stored one with --full-run" in capsys.readouterr().err


def test_prompt_costs_from_a_file_and_a_bad_one_named_by_line(tmp_path: Path, capsys) -> None:
    suite = _stored_suite(tmp_path)
    costs = tmp_path / "costs.yaml"
    costs.write_text("shots5:\n  example_tokens: 3000\n  mean_input_tokens: 3100\n  context_share: 0.37\n")
    out = tmp_path / "advice.json"
    args = ["advise", str(suite), "--run", "latest", "--store", str(tmp_path / "store"), "--out", str(out)]
    assert main([*args, "--prompt-costs", str(costs)]) == 0
    advice = read_advice(out)
    assert advice.decided_by == "context_share" and advice.measurements.arm("shots5").cost.context_share == 0.37
    assert advice.measurements.arm("base").cost.mean_input_tokens == 100  # the run's own costs stay
    costs.write_text("shots5:\n  example_tokens: 3000\n  mean_input_tokens: 3100\n  context_share: 1.5\n")
    capsys.readouterr()
    assert main([*args, "--prompt-costs", str(costs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"harness: error: {costs}:4: shots5.context_share:") and "\n" not in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, harness_tiny_model_dir: Path) -> Path:
    """A real run of a tiny random model: support_intent on the base model and its LoRA."""
    tmp = tmp_path_factory.mktemp("advise")
    csv = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
    suite = {
        "name": "advise-tiny",
        "seed": 1,
        "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "data": [{"path": csv, "format": "csv", "split": "train", "sample": 8, "user": "{instruction}", "assistant": "{intent}"}],
        "train": {"name": "lora", "max_steps": 1, "batch_size": 4, "max_length": 48},
        "evaluate": {"intent": {"name": "support_intent", "sample": 12, "max_new_tokens": 3}},
        "report": ["json"],
        "deployment": {"requests_per_month": 2_000_000, "price_per_1k_input_tokens": 0.001, "gpu_hour_price": 2.0},
        "store": "store",
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--reports", str(tmp / "reports")]) in (0, 1)
    return path


def test_cli_advises_on_a_real_stored_run(tiny_run: Path, capsys) -> None:
    costs = tiny_run.parent / "costs.yaml"
    costs.write_text("baseline: {example_tokens: 0, mean_input_tokens: 60, context_share: 0.0}\n")
    out = tiny_run.parent / "advice.json"
    capsys.readouterr()
    code = main(["advise", str(tiny_run), "--run", "latest", "--prompt-costs", str(costs), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "baseline" in printed and "candidate" in printed and "Recommendation:" in printed
    advice = read_advice(out)
    assert advice.measurements.labelled_examples == 8
    assert {a.name: a.kind for a in advice.measurements.arms} == {"baseline": "prompting", "candidate": "lora"}
    candidate = advice.measurements.arm("candidate")
    assert candidate.train_seconds is not None and candidate.train_seconds > 0 and candidate.n == 12
    assert advice.measurements.format_check == "label" and candidate.format_failures is not None
    assert advice.decided_by == "few_examples" and advice.recommendation == "prompting"
    # the trained arm is charged the zero-shot prompt, so training saves nothing and never pays back
    assert advice.economics.monthly_saving == 0 and math.isinf(advice.economics.break_even_days)


def test_the_suite_s_advise_block_moves_a_threshold(tmp_path: Path) -> None:
    suite = _stored_suite(tmp_path, advise_block={"rules": {"few_examples": {"min_examples": 500}}})
    out = tmp_path / "advice.json"
    assert main(["advise", str(suite), "--run", "latest", "--store", str(tmp_path / "store"), "--out", str(out)]) == 0
    advice = read_advice(out)
    assert advice.decided_by == "few_examples" and "below 500" in _reason(advice, "few_examples").text
