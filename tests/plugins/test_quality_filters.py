"""perplexity_outliers and quality_classifier on real records with planted bad ones.

Real data: the Bitext customer-support CSV (user = instruction, assistant = response) and the
HH-RLHF helpful-base conversations (ShareGPT conversion, final assistant turn judged).

* perplexity_outliers: 300 real Bitext records plus 20 planted outliers (10 word salads: the
  words of a real response shuffled; 10 random character strings), scored by the embedded
  SmolLM2 with ``max_tokens: 32`` (16 tokens of context, 16 scored) so that it runs on a CPU.
  Recall of the planted records >= 0.95 and false positives on the real ones <= 2% with the
  default ``k``.  The outlier rules themselves (sides, IQR, MAD = 0, quarantine) are checked on
  given scores, without the model.
* quality_classifier: degradations made here, independently of the module's own generator
  (cut to 2-5 words, a sentence repeated, shuffled words, another record's answer, non-answers
  phrased differently from the recipe's); every real record is paired with one degraded copy.
  A classifier trained from a labelled JSONL file of 100 Bitext *train*-half records (and their
  copies) is measured on 150 Bitext *holdout*-half records and their copies (recall >= 0.95,
  FP <= 2%); the default weak-supervision classifier on those and 100 holdout HH-RLHF records and
  their copies (recall >= 0.9, FP <= 5%).  The holdout half is ``split_of(id, 0.5,
  seed=2024)``, the half the default recipe never trains on.

The measured rates are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.plugin.components import FilterResult, RunContext
from harness.lib.data import data_dir, seeded_sample, split_of
from harness.errors import ConfigError
from harness.types import Conversation, Message
from harness_plugins.filters import quality
from harness_plugins.filters.perplexity import MIN_RECORDS, PerplexityOutliers, spread
from harness_plugins.filters.quality import QualityClassifier
from harness_plugins.readers.formats import CsvReader, ShareGPTReader

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
PPL_DETAIL = re.compile(
    r"^ppl \d+\.\d, robust z -?\d+\.\d \(median \d+\.\d(, (upper|lower) fence \d+\.\d)?\)$"
)
QUALITY_DETAIL = re.compile(r"^P\(bad\) [01]\.\d\d$")


def source_id(record: Conversation) -> str:
    return record.source_id


def ledger_ok(records: Sequence[Conversation], result: FilterResult) -> bool:
    """Every input exactly once in kept, dropped or quarantined."""
    out = [r.source_id for r in result.kept]
    out += [d.source_id for d in result.dropped] + [q.source_id for q in result.quarantined]
    return Counter(out) == Counter(r.source_id for r in records)


def with_response(record: Conversation, text: str, tag: str) -> Conversation:
    """``record`` with its final assistant turn replaced by ``text``."""
    last = max(i for i, m in enumerate(record.messages) if m.role == "assistant")
    messages = list(record.messages)
    messages[last] = Message("assistant", text)
    return Conversation(tuple(messages), f"{record.source_id}#{tag}")


def response_of(record: Conversation) -> str:
    return [m.content for m in record.messages if m.role == "assistant"][-1]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    path = tmp_path_factory.mktemp("quality_filters")
    return RunContext(path, path / "work")


@pytest.fixture(scope="module")
def bitext(ctx) -> list[Conversation]:
    reader = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    return [
        r for r in reader.read(data_dir() / BITEXT, "bitext.csv") if isinstance(r, Conversation)
    ]


@pytest.fixture(scope="module")
def hh(ctx) -> list[Conversation]:
    reader = ShareGPTReader(ShareGPTReader.Config(), ctx)
    return [r for r in reader.read(data_dir() / HH, "hh.jsonl") if isinstance(r, Conversation)]


# ================================================================== perplexity_outliers


def word_salad(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def random_chars(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    return " ".join(
        "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 10))) for _ in range(40)
    )


@pytest.fixture(scope="module")
def ppl_case(bitext, ctx, harness_embedded_model_dir):
    """300 real records and 20 planted outliers through the filter (defaults but the token
    budget); the scores it computed are kept for the other checks."""
    real = seeded_sample(bitext, 300, 0, source_id)
    taken = {r.source_id for r in real}
    donors = seeded_sample([r for r in bitext if r.source_id not in taken], 20, 1, source_id)
    rng = random.Random(3)
    planted = [
        with_response(r, word_salad(response_of(r), rng), "salad")
        if i % 2 == 0
        else with_response(r, random_chars(rng), "chars")
        for i, r in enumerate(donors)
    ]
    records = real + planted
    config = PerplexityOutliers.Config(model=str(harness_embedded_model_dir), max_tokens=32, batch_size=32)
    flt = PerplexityOutliers(config, ctx)
    seen: dict[str, list[float]] = {}
    scores = flt.scores

    def spy(batch: Sequence[Conversation]) -> list[float]:
        seen["scores"] = scores(batch)
        return seen["scores"]

    flt.scores = spy
    result = flt.apply(records)
    return records, {r.source_id for r in planted}, result, seen["scores"]


def test_perplexity_catches_planted_outliers(ppl_case) -> None:
    records, planted, result, _ = ppl_case
    removed = {d.source_id for d in result.dropped}
    recall = len(removed & planted) / len(planted)
    false_positives = len(removed - planted) / (len(records) - len(planted))
    n_real = len(records) - len(planted)
    print(
        f"\nperplexity_outliers: recall {recall:.3f} ({len(removed & planted)}/{len(planted)}), "
        f"false positives {false_positives:.4f} ({len(removed - planted)}/{n_real})"
    )
    assert recall >= 0.95
    assert false_positives <= 0.02
    assert {d.reason for d in result.dropped} == {"perplexity_high"}
    assert all(d.filter == "perplexity_outliers" for d in result.dropped)
    assert all(PPL_DETAIL.match(d.detail) for d in result.dropped), result.dropped[:3]


def test_perplexity_scores_are_finite_and_ledger_balances(ppl_case) -> None:
    records, planted, result, scores = ppl_case
    assert len(scores) == len(records)
    assert all(math.isfinite(x) and x > 0 for x in scores)
    real = sorted(x for r, x in zip(records, scores) if r.source_id not in planted)
    print(
        f"\nlog-perplexity of the real records: median {real[len(real) // 2]:.2f}, "
        f"max {real[-1]:.2f}; planted min "
        f"{min(x for r, x in zip(records, scores) if r.source_id in planted):.2f}"
    )
    assert ledger_ok(records, result)
    assert not result.quarantined


def test_perplexity_scopes_and_windows(bitext, ctx, harness_embedded_model_dir) -> None:
    """Conversation scope scores every token; a long prompt still leaves tokens to score; a
    record without an assistant turn has nothing to score in response scope (NaN, kept)."""
    config = {"model": str(harness_embedded_model_dir), "max_tokens": 24}
    response = PerplexityOutliers(PerplexityOutliers.Config(**config), ctx)
    whole = PerplexityOutliers(PerplexityOutliers.Config(scope="conversation", **config), ctx)
    long_prompt = Conversation(
        (Message("user", "Please read this. " * 40), bitext[0].messages[1]), "l:1"
    )
    no_answer = Conversation((Message("user", "Hello there, how are you?"),), "q:1")
    records = [bitext[0], long_prompt, no_answer]
    by_response, by_conversation = response.scores(records), whole.scores(records)
    assert all(math.isfinite(x) for x in by_response[:2]) and math.isnan(by_response[2])
    assert all(math.isfinite(x) for x in by_conversation)
    assert by_response[0] != by_conversation[0]
    tokens, n, counted = response._sequence(long_prompt, 24)
    assert len(tokens) == 24 and len(tokens) - n == 12 and counted[0]


def test_perplexity_needs_enough_records(bitext, ctx) -> None:
    flt = PerplexityOutliers(PerplexityOutliers.Config(), ctx)
    with pytest.raises(ConfigError, match=r"perplexity_outliers.*20.*got 19"):
        flt.apply(bitext[:19])


def given_scores(ctx, values: list[float], **config) -> tuple[list[Conversation], FilterResult]:
    """Apply the filter to synthetic records whose scores are ``values`` (no model)."""
    records = [
        Conversation((Message("user", "q"), Message("assistant", f"a{i}")), f"s:{i}")
        for i in range(len(values))
    ]
    flt = PerplexityOutliers(PerplexityOutliers.Config(**config), ctx)
    flt.scores = lambda batch: list(values)
    return records, flt.apply(records)


def test_outlier_rules_on_given_scores(ctx) -> None:
    base = [2.0 + 0.1 * math.sin(i) for i in range(40)]
    values = base + [6.0, -1.0, math.nan]
    records, result = given_scores(ctx, values)  # side high (default)
    assert [(d.source_id, d.reason) for d in result.dropped] == [("s:40", "perplexity_high")]
    assert ledger_ok(records, result)  # the NaN record (nothing to score) is kept
    _, result = given_scores(ctx, values, side="both", action="quarantine")
    assert not result.dropped
    assert [q.source_id for q in result.quarantined] == ["s:40", "s:41"]
    assert "perplexity_low" in result.quarantined[1].reason
    _, result = given_scores(ctx, values, side="low")
    assert [(d.source_id, d.reason) for d in result.dropped] == [("s:41", "perplexity_low")]
    _, result = given_scores(ctx, values, method="iqr", k=1.5, side="both")
    assert {d.source_id for d in result.dropped} == {"s:40", "s:41"}
    assert all("fence" in d.detail and PPL_DETAIL.match(d.detail) for d in result.dropped)
    # More than half the records equal: MAD is 0, the mean absolute deviation takes over.
    _, result = given_scores(ctx, [3.0] * 30 + [3.1, 2.9] * 5 + [9.0])
    assert [d.source_id for d in result.dropped] == ["s:40"]
    # Only 19 records with a score: too few, even among 25.
    with pytest.raises(ConfigError, match="got 19"):
        given_scores(ctx, [2.0] * 19 + [math.nan] * 6)


def test_spread_matches_definitions() -> None:
    values = [1.0, 2.0, 2.0, 3.0, 4.0, 10.0]
    mad = spread(values, "mad", 3.5)
    assert mad.median == 2.5 and mad.scale == pytest.approx(1.4826 * 1.0)
    assert mad.high == pytest.approx(2.5 + 3.5 * 1.4826)
    iqr = spread(values, "iqr", 1.5)  # quartiles 2.0 and 3.75 (linear interpolation)
    assert (iqr.low, iqr.high) == (
        pytest.approx(2.0 - 1.5 * 1.75),
        pytest.approx(3.75 + 1.5 * 1.75),
    )
    assert MIN_RECORDS == 20


# =================================================================== quality_classifier

NON_ANSWERS = ["I do not know.", "Sorry, no idea.", "Not sure.", "I can't say.", "Dunno."]
KINDS = ("cut", "repeated", "salad", "swapped", "non_answer")


def degraded(
    record: Conversation, kind: str, rng: random.Random, donor: Conversation
) -> Conversation:
    """A bad copy of ``record`` (this test's own generator, not the module's)."""
    text = response_of(record)
    if kind == "cut":
        bad = " ".join(text.split()[: rng.randint(2, 5)]).rstrip(".!?,;:")
    elif kind == "repeated":
        first = re.split(r"(?<=[.!?])\s+|\n", text.strip())[0]
        bad = "\n".join([first] * rng.randint(3, 8))
    elif kind == "salad":
        bad = word_salad(text, rng)
    elif kind == "swapped":
        bad = response_of(donor)
    else:
        bad = rng.choice(NON_ANSWERS)
    return with_response(record, bad, kind)


def labelled_set(good: Sequence[Conversation], seed: int) -> tuple[list[Conversation], list[str]]:
    """Each good record, and a degraded copy of it (kinds in turn; a swap takes the answer of
    the record half the list away)."""
    rng = random.Random(seed)
    bad = [
        degraded(r, KINDS[i % len(KINDS)], rng, good[(i + len(good) // 2) % len(good)])
        for i, r in enumerate(good)
    ]
    return list(good) + bad, ["good"] * len(good) + ["bad"] * len(bad)


def half(records: Sequence[Conversation], which: str) -> list[Conversation]:
    return [
        r
        for r in records
        if split_of(r.source_id, quality.HOLDOUT_FRACTION, quality.RECIPE_SEED) == which
    ]


def rates(
    probabilities: Sequence[float], labels: Sequence[str], threshold: float = 0.5
) -> tuple[float, float]:
    """(recall of bad, false-positive rate on good)."""
    bad = [p > threshold for p, y in zip(probabilities, labels) if y == "bad"]
    good = [p > threshold for p, y in zip(probabilities, labels) if y == "good"]
    return sum(bad) / len(bad), sum(good) / len(good)


@pytest.fixture(scope="module")
def bitext_heldout(bitext) -> tuple[list[Conversation], list[str]]:
    return labelled_set(seeded_sample(half(bitext, "holdout"), 150, 11, source_id), seed=12)


@pytest.fixture(scope="module")
def hh_heldout(hh) -> tuple[list[Conversation], list[str]]:
    return labelled_set(seeded_sample(half(hh, "holdout"), 100, 13, source_id), seed=14)


@pytest.fixture(scope="module")
def train_file(bitext, tmp_path_factory) -> Path:
    """A labelled JSONL file from 100 Bitext train-half records and their degradations."""
    records, labels = labelled_set(
        seeded_sample(half(bitext, "train"), 100, 21, source_id), seed=22
    )
    path = tmp_path_factory.mktemp("quality_train") / "labelled.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for record, label in zip(records, labels):
            messages = [{"role": m.role, "content": m.content} for m in record.messages]
            fh.write(json.dumps({"messages": messages, "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(train_file, ctx) -> QualityClassifier:
    return QualityClassifier(QualityClassifier.Config(train=str(train_file)), ctx)


def test_quality_trained_from_file(trained, bitext_heldout) -> None:
    records, labels = bitext_heldout
    recall, fp = rates(trained.predict_proba(records), labels)
    print(
        f"\nquality_classifier (trained on {trained.classifier.trained_on}): recall {recall:.3f}, "
        f"false positives {fp:.4f} on {len(labels)} held-out Bitext records"
    )
    assert recall >= 0.95
    assert fp <= 0.02


def test_quality_default_weak_supervision(ctx, bitext_heldout, hh_heldout) -> None:
    flt = QualityClassifier(QualityClassifier.Config(), ctx)
    records = bitext_heldout[0] + hh_heldout[0]
    labels = bitext_heldout[1] + hh_heldout[1]
    probabilities = flt.predict_proba(records)
    recall, fp = rates(probabilities, labels)
    n = len(bitext_heldout[0])
    by_source = {
        "bitext": rates(probabilities[:n], labels[:n]),
        "hh": rates(probabilities[n:], labels[n:]),
    }
    kinds = Counter(
        r.source_id.rsplit("#", 1)[1]
        for r, p in zip(records, probabilities)
        if "#" in r.source_id and p <= 0.5
    )
    print(
        f"\nquality_classifier default: recall {recall:.3f}, false positives {fp:.4f} "
        f"(bitext {by_source['bitext']}, hh {by_source['hh']}); missed by kind {dict(kinds)}"
    )
    assert recall >= 0.9
    assert fp <= 0.05
    cached = sorted(quality.quality_cache_dir().glob("default-*.json"))
    assert cached, "the default classifier is cached as JSON"
    assert flt.classifier.trained_on["source"] == "weak supervision"


def test_quality_apply_reasons_and_ledger(ctx, trained, bitext_heldout) -> None:
    records, _ = bitext_heldout
    result = trained.apply(records)
    assert ledger_ok(records, result)
    assert {d.reason for d in result.dropped} == {"low_quality"}
    assert all(QUALITY_DETAIL.match(d.detail) for d in result.dropped)
    config = QualityClassifier.Config(model_path=None, train=trained.cfg.train, action="quarantine")
    quarantined = QualityClassifier(config, ctx).apply(records)
    assert ledger_ok(records, quarantined) and not quarantined.dropped
    assert len(quarantined.quarantined) == len(result.dropped)


def test_quality_model_file_round_trips(ctx, trained, bitext_heldout, tmp_path) -> None:
    records, _ = bitext_heldout
    path = trained.classifier.save(tmp_path / "classifier.json")
    loaded = QualityClassifier(QualityClassifier.Config(model_path=str(path)), ctx)
    assert loaded.predict_proba(records) == trained.predict_proba(records)
    assert loaded.classifier == trained.classifier


def test_quality_rejects_bad_model_files(ctx, trained, tmp_path) -> None:
    good = trained.classifier.to_json()
    probe = [Conversation((Message("user", "hi"), Message("assistant", "Hello!")), "p:1")]

    def load(name: str, content: str | bytes) -> None:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        QualityClassifier(QualityClassifier.Config(model_path=str(path)), ctx).predict_proba(probe)

    tampered = {**good, "coef": [good["coef"][0] + 1.0, *good["coef"][1:]]}
    with pytest.raises(ConfigError, match="checksum mismatch"):
        load("tampered.json", json.dumps(tampered))
    short = {**good, "coef": good["coef"][:-1]}
    short["sha256"] = quality._checksum({k: v for k, v in short.items() if k != "sha256"})
    with pytest.raises(ConfigError, match="'coef' must be a list of"):
        load("short.json", json.dumps(short))
    with pytest.raises(ConfigError, match="not a JSON classifier file"):
        load("pickled.pkl", b"\x80\x04\x95\x00\x00\x00\x00")
    with pytest.raises(ConfigError, match="not a finetune-harness/quality-classifier file"):
        load("other.json", json.dumps({"weights": [1, 2]}))
    with pytest.raises(ConfigError, match="not found"):
        QualityClassifier(QualityClassifier.Config(model_path="missing.json"), ctx).predict_proba(
            probe
        )


def test_quality_config_and_training_file_errors(ctx, tmp_path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        QualityClassifier.Config(train="a.jsonl", model_path="b.json")
    path = tmp_path / "bad_label.jsonl"
    path.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ],
                "label": "ok",
            }
        )
        + "\n"
    )
    with pytest.raises(ConfigError, match=r"bad_label.jsonl:1: 'label'"):
        QualityClassifier(QualityClassifier.Config(train=str(path)), ctx).predict_proba([])
    few = tmp_path / "few.jsonl"
    row = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    few.write_text("".join(json.dumps({**row, "label": label}) + "\n" for label in ("good", "bad")))
    with pytest.raises(ConfigError, match="at least 5 good and 5 bad"):
        QualityClassifier(QualityClassifier.Config(train=str(few)), ctx).predict_proba([])
