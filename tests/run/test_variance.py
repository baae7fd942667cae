"""Training-seed variance (``train.seeds``, ``train.seed_rule``) and filter ablation
(``curate.ablate``): one candidate per seed and per ablated filter, the spread, the gate rule, and
the validate-time errors.

Scripted components (a trainer that writes its seed and record count, a benchmark whose accuracy
is set per seed) construct the outcomes exactly; one run trains real LoRA candidates on the tiny
fake model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.cli import main
from harness.lib.models import LoadedModel
from harness.plugin.components import Backend, Benchmark, ComponentConfig, Trainer
from harness.types import ItemResult, TrainOutput, Verdict

N_ITEMS = 40
RECORDS = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(8)]
DUPLICATES = RECORDS[:2]  # exact_dedup drops these two: 10 records in, 8 kept


class _SeedTrainer(Trainer):
    """Writes a marker adapter naming the seed and the number of records it was trained on."""

    name = "seed_trainer"

    def train(self, base: Any, data: Any, ctx: Any) -> TrainOutput:
        path = ctx.output_dir / "adapter"
        path.mkdir(parents=True, exist_ok=True)
        (path / "adapter_config.json").write_text(json.dumps({"seed": ctx.seed, "records": len(data)}))
        return TrainOutput(path, 1, len(data), 10, 1.0, 0.5, 0.0)


class _Backend(Backend):
    name = "seed_backend"

    def load(self, ref: Any, *, trainable: bool = False) -> LoadedModel:
        return LoadedModel(ref, None, None, "float32")


class _BenchConfig(ComponentConfig):
    accuracy: dict[int, float]
    """Seed -> accuracy of that seed's candidate; 0: the base model."""
    ablated: float = 0.0
    """Accuracy of a candidate trained on more records than ``records`` (a filter was off)."""
    records: int = len(RECORDS)


class _SeedBench(Benchmark):
    """Item i is correct when i < accuracy * N, the accuracy read from the adapter marker."""

    name = "seed_bench"
    Config = _BenchConfig

    def items(self) -> list[dict[str, str]]:
        return [{"id": f"q{i:02d}"} for i in range(N_ITEMS)]

    def evaluate(self, model: Any, items: Any, progress: Any) -> list[ItemResult]:
        config: _BenchConfig = self.config  # type: ignore[assignment]
        adapter = model.ref.adapter
        marker = json.loads((adapter / "adapter_config.json").read_text()) if adapter else {"seed": 0, "records": 0}
        accuracy = config.ablated if marker["records"] > config.records else config.accuracy[marker["seed"]]
        correct = round(accuracy * N_ITEMS)
        return [ItemResult(it["id"], "", "", float(int(it["id"][1:]) < correct)) for it in items]


class _Plugin:
    @harness.hookimpl
    def harness_register_trainers(self, registrar: Any) -> None:
        registrar.add(_SeedTrainer)

    @harness.hookimpl
    def harness_register_backends(self, registrar: Any) -> None:
        registrar.add(_Backend)

    @harness.hookimpl
    def harness_register_benchmarks(self, registrar: Any) -> None:
        registrar.add(_SeedBench)


def _scripted(tmp_path: Path, model_dir: Path, accuracy: dict[int, float], **train: Any) -> dict[str, Any]:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS + DUPLICATES))
    return {
        "name": "seeds",
        "model": {"source": str(model_dir), "backend": "seed_backend"},
        "data": [{"path": str(data), "format": "alpaca"}],
        "curate": {"filters": ["exact_dedup"]},
        "train": {"name": "seed_trainer", **train},
        "evaluate": {"domain": {"name": "seed_bench", "accuracy": accuracy, "ablated": 0.6}},
        "gates": {"domain": "superior()"},
        "report": ["json", "markdown", "terminal"],
    }


def _run(harness_run_suite: Any, suite: dict[str, Any]) -> Any:
    return harness_run_suite(suite, plugins=[("seeds", _Plugin())])


def _document(tmp_path: Path) -> dict[str, Any]:
    [path] = (tmp_path / "reports").glob("*/result.json")
    return json.loads(path.read_text())


def test_three_seeds_give_three_candidates_their_spread_and_all_must_pass(tmp_path, harness_run_suite, harness_fake_model_dir) -> None:
    accuracy = {0: 0.5, 1: 0.9, 2: 0.2, 3: 0.8}  # seed 2's candidate is clearly worse than the base
    result = _run(harness_run_suite, _scripted(tmp_path, harness_fake_model_dir, accuracy, seeds=[1, 2, 3]))
    seeds = result.seeds
    assert seeds.labels == {1: "candidate", 2: "trained@seed=2", 3: "trained@seed=3"}
    per_model = result.benchmarks["domain"]
    assert {m: r.score for m, r in per_model.items()} == {
        "baseline": 0.5, "candidate": 0.9, "trained@seed=2": 0.2, "trained@seed=3": 0.8}
    adapters = {per_model[label].cache_key for label in seeds.labels.values()}
    assert len(adapters) == 3  # three trained models, three evaluation cache entries
    [scores] = seeds.benchmarks
    assert scores.scores == {1: 0.9, 2: 0.2, 3: 0.8}
    low, high, std = scores.spread
    assert (low, high) == (0.2, 0.9) and std == pytest.approx(0.3786, abs=1e-4)
    [decision] = result.decisions
    assert decision.verdict is Verdict.FAIL and result.exit_code == 1
    assert decision.reason.startswith("every seed must pass (seeds: 1 pass, 2 fail, 3 pass); seed 2: not better")
    assert decision.comparison.candidate == pytest.approx(0.2)
    doc = _document(tmp_path)
    assert doc["seeds"]["labels"] == {"1": "candidate", "2": "trained@seed=2", "3": "trained@seed=3"}
    assert doc["seeds"]["benchmarks"][0]["min"] == 0.2 and doc["seeds"]["benchmarks"][0]["max"] == 0.9
    assert doc["arms"]["trained@seed=2"]["name"] == "trained@seed=2"
    [md] = (tmp_path / "reports").glob("*/report.md")
    text = md.read_text()
    assert "Training seeds: 3 candidates" in text
    assert "| domain | 0.900 | 0.200 | 0.800 | 0.200 | 0.900 | 0.379 |" in text


def test_all_passes_when_every_seed_passes(tmp_path, harness_run_suite, harness_fake_model_dir) -> None:
    accuracy = {0: 0.3, 1: 0.9, 2: 0.8, 3: 0.85}
    result = _run(harness_run_suite, _scripted(tmp_path, harness_fake_model_dir, accuracy, seeds=[1, 2, 3]))
    [decision] = result.decisions
    assert decision.verdict is Verdict.PASS and result.exit_code == 0
    assert decision.reason.startswith("every seed must pass (seeds: 1 pass, 2 pass, 3 pass); seed 1:")


def test_pooled_gives_one_decision_on_every_seed_items_clustered_by_item(tmp_path, harness_run_suite, harness_fake_model_dir) -> None:
    from harness.lib.stats import mcnemar

    accuracy = {0: 0.5, 1: 0.9, 2: 0.2, 3: 0.8}
    suite = _scripted(tmp_path, harness_fake_model_dir, accuracy, seeds=[1, 2, 3], seed_rule="pooled")
    result = _run(harness_run_suite, suite)
    [decision] = result.decisions
    cmp = decision.comparison
    assert cmp.n == 3 * N_ITEMS
    assert cmp.diff == pytest.approx((0.9 + 0.2 + 0.8) / 3 - 0.5)
    assert decision.reason.startswith("pooled over seeds 1, 2, 3 (items clustered by item): ")
    # the same pooled items treated as independent give a narrower interval than clustered by item
    base = [float(i < 20) for i in range(N_ITEMS)] * 3
    cand = [float(i < c) for c in (36, 8, 32) for i in range(N_ITEMS)]
    flat = mcnemar(base, cand, cmp.alpha)
    assert cmp.ci_high - cmp.ci_low > flat.ci_high - flat.ci_low
    assert result.seeds.rule == "pooled"


def test_a_seed_that_fails_to_train_makes_the_gate_error(tmp_path, harness_run_suite, harness_fake_model_dir, monkeypatch) -> None:
    original = _SeedTrainer.train

    def train(self: _SeedTrainer, base: Any, data: Any, ctx: Any) -> TrainOutput:
        if ctx.seed == 3:
            raise RuntimeError("out of memory")
        return original(self, base, data, ctx)

    monkeypatch.setattr(_SeedTrainer, "train", train)
    accuracy = {0: 0.3, 1: 0.9, 2: 0.9, 3: 0.9}
    for rule in ("all", "pooled"):
        (tmp_path / rule).mkdir()
        suite = _scripted(tmp_path / rule, harness_fake_model_dir, accuracy, seeds=[1, 2, 3], seed_rule=rule)
        result = harness_run_suite(suite, plugins=[("seeds", _Plugin())], work_dir=tmp_path / rule)
        [decision] = result.decisions
        assert decision.verdict is Verdict.ERROR and result.exit_code == 3, rule
        assert "seed 3" in decision.reason and "out of memory" in decision.reason
        assert result.seeds.errors[3].startswith("training failed: RuntimeError: out of memory")


def test_ablation_trains_without_the_filter_and_reports_what_it_bought(tmp_path, harness_run_suite, harness_fake_model_dir) -> None:
    suite = _scripted(tmp_path, harness_fake_model_dir, {0: 0.5, 7: 0.9}, seeds=[7])
    suite["curate"]["ablate"] = ["exact_dedup"]
    result = _run(harness_run_suite, suite)
    per_model = result.benchmarks["domain"]
    assert per_model["candidate"].score == 0.9  # 8 records: the duplicates dropped
    assert per_model["trained@without=exact_dedup"].score == 0.6  # 10 records: no dedup
    [impact] = result.ablation
    assert (impact.filter, impact.benchmark, impact.label) == ("exact_dedup", "domain", "trained@without=exact_dedup")
    assert impact.comparison.diff == pytest.approx(0.3) and impact.comparison.ci_low > 0
    assert [d.verdict for d in result.decisions] == [Verdict.PASS]  # ablations are never gated
    doc = _document(tmp_path)
    assert doc["ablation"][0]["comparison"]["diff"] == pytest.approx(0.3)
    [md] = (tmp_path / "reports").glob("*/report.md")
    assert "| exact_dedup | domain | 0.900 | 0.600 | +0.300 |" in md.read_text()


# ---------------------------------------------------------------------- validate-time errors


@pytest.mark.parametrize(
    ("train", "more", "message"),
    [
        ({"seeds": []}, {}, "train.seeds: an empty list"),
        ({"seeds": [1, 2, 1]}, {}, "train.seeds: seed 1 is listed twice"),
        ({"seeds": [1, "two"]}, {}, "train.seeds.1: Input should be a valid integer"),
        ({"seeds": [1, 2.5]}, {}, "train.seeds.1: Input should be a valid integer"),
        ({"seeds": [1, 2]}, {"models": {"other": {"adapter": "x"}}, "candidate": "other"}, "candidate: train.seeds trains one candidate per seed"),
        ({}, {"curate": {"filters": ["exact_dedup"], "ablate": ["no_such_filter"]}}, "curate.ablate.0: unknown filter 'no_such_filter'"),
        ({}, {"curate": {"filters": ["exact_dedup"], "ablate": ["pii"]}}, "curate.ablate.0: filter 'pii' is not in the curate chain (exact_dedup)"),
    ],
)
def test_bad_seeds_and_ablations_are_validate_errors(tmp_path, harness_write_suite, harness_fake_model_dir, capsys, train, more, message) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    suite = {
        "name": "bad",
        "model": {"source": str(harness_fake_model_dir), "backend": "hf"},
        "data": [{"path": str(data), "format": "alpaca"}],
        "train": {"name": "lora", "max_steps": 1, **train},
        "report": ["json"],
        **more,
    }
    path = harness_write_suite(suite)
    code = main(["validate", str(path), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert re.match(rf"harness: error: {re.escape(str(path))}:\d+: ", err) and message in err, err


# ------------------------------------------------------------------------- a real tiny model


def test_three_lora_seeds_on_the_tiny_model(tmp_path, harness_run_suite, harness_fake_model_dir) -> None:
    """Real LoRA trainings on the tiny fake model: three seeds, three different adapters, each
    evaluated on the same MMLU items, the spread reported and the gate decided on every seed."""
    csv = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
    suite = {
        "name": "tiny-seeds",
        "model": {"source": str(harness_fake_model_dir), "backend": "hf"},
        "data": [{"path": csv, "format": "csv", "user": "{instruction}", "assistant": "{intent}", "sample": 16}],
        "curate": {"filters": ["exact_dedup", {"name": "min_response_length", "min_chars": 14}], "ablate": ["min_response_length"]},
        "train": {"name": "lora", "max_steps": 2, "learning_rate": 0.05, "seeds": [1, 2, 3]},
        "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 4, "subjects": ["anatomy", "virology", "astronomy"]}},
        "gates": {"mmlu": "no_regression(margin=0.5)"},
        "report": ["json"],
    }
    result = harness_run_suite(suite)
    labels = ["candidate", "trained@seed=2", "trained@seed=3"]
    assert set(result.benchmarks["mmlu"]) == {"baseline", *labels, "trained@without=min_response_length"}
    adapters = {result.models[label].split("+ adapter ")[1] for label in labels}
    assert len(adapters) == 3  # three trainings, each its own cache entry and folder
    items = {tuple(sorted(i.item_id for i in result.benchmarks["mmlu"][m].items)) for m in result.benchmarks["mmlu"]}
    assert len(items) == 1 and len(next(iter(items))) == 12  # the same items for every arm
    [scores] = result.seeds.benchmarks
    assert set(scores.scores) == {1, 2, 3} and scores.spread is not None
    assert result.seeds.labels == dict(zip([1, 2, 3], labels, strict=True))
    # the ablated candidate: trained on more records (intents are short), compared on the same items
    assert "trained@without=min_response_length" in result.benchmarks["mmlu"]
    [impact] = result.ablation
    assert impact.error is None and impact.comparison is not None and impact.comparison.n == 12
    without = next(s for s in result.stages if s.stage == "train:trained@without=min_response_length")
    assert without.outcome == "ok"
    [decision] = result.decisions
    assert decision.verdict is not Verdict.ERROR  # every seed trained and was evaluated
