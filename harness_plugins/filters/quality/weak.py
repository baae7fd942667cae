"""The default classifier: trained on a weak-supervision set of real responses (good) and
synthetic degradations of other real responses (bad), and cached by a hash of its recipe."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any


from harness.errors import ConfigError, DataError
from harness.plugin.components import (
    RunContext,
)
from harness.types import Conversation, Message

from .features import C, EMBED_WORDS, EMBEDDING_WEIGHT, FEATURES, NAME, VERSION, prompt_and_response, words_of
from .model import QualityModel, train_model



RECIPE_VERSION = 1
RECIPE_SEED = 2024
HOLDOUT_FRACTION = 0.5
DEFAULT_GOOD_BITEXT = 300
DEFAULT_GOOD_HH = 400
SHORT_WORDS = 6
BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
DEGRADATIONS = ("truncated", "repeated_lines", "word_salad", "swapped", "non_answer")
NON_ANSWERS = (
    "I don't know.",
    "I don't know",
    "I'm not sure.",
    "No idea.",
    "Sorry, I can't help with that.",
    "I cannot answer that.",
    "Not sure, sorry.",
    "Hmm.",
    "OK.",
    "Maybe.",
    "Yes.",
    "No.",
)



def degrade(
    record: Conversation, kind: str, rng: random.Random, other: Conversation
) -> Conversation:
    """A bad copy of ``record``: its final assistant turn replaced by a degradation of ``kind``
    (``other`` lends the response of a ``swapped`` one)."""
    _, response = prompt_and_response(record)
    words = words_of(response) or ["Sure"]
    if kind == "truncated":
        cut = words[: rng.randint(1, min(5, len(words)))]
        text = " ".join(cut).rstrip(".!?:;,")
    elif kind == "repeated_lines":
        lines = [line for line in response.splitlines() if line.strip()] or [response]
        line = rng.choice(lines[:3])
        text = "\n".join([line] * rng.randint(4, 12))
    elif kind == "word_salad":
        rng.shuffle(words)
        text = " ".join(words)
    elif kind == "swapped":
        text = prompt_and_response(other)[1]
    elif kind == "non_answer":
        text = rng.choice(NON_ANSWERS)
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    last = max(i for i, m in enumerate(record.messages) if m.role == "assistant")
    messages = list(record.messages)
    messages[last] = Message("assistant", text)
    return Conversation(tuple(messages), f"{record.source_id}#{kind}")


def default_pool(ctx: RunContext) -> tuple[list[Conversation], list[Conversation]]:
    """The recipe's real records (``train`` half only): Bitext and HH-RLHF helpful-base."""
    from harness.lib.data import data_dir, split_of
    from harness.lib.records import read_csv, read_jsonl

    root = data_dir()
    csv = read_csv(root / BITEXT, "bitext.csv", user="{instruction}", assistant="{response}")
    bitext = [r for r in csv if isinstance(r, Conversation)]
    hh = [r for r in read_jsonl(root / HH, "hh.jsonl", "sharegpt") if isinstance(r, Conversation)]

    def train_half(records: list[Conversation]) -> list[Conversation]:
        return [
            r
            for r in records
            if split_of(r.source_id, HOLDOUT_FRACTION, RECIPE_SEED) == "train"
            and prompt_and_response(r)[1].strip()
        ]

    return train_half(bitext), train_half(hh)


def recipe() -> dict[str, Any]:
    """What determines the default classifier (its cache key hashes this)."""
    from harness.lib.data import data_dir, file_digest
    from harness.lib.embed import EMBEDDER_ID

    root = data_dir()
    return {
        "recipe": RECIPE_VERSION,
        "seed": RECIPE_SEED,
        "holdout_fraction": HOLDOUT_FRACTION,
        "good": {"bitext": DEFAULT_GOOD_BITEXT, "hh": DEFAULT_GOOD_HH, "short": SHORT_WORDS},
        "degradations": list(DEGRADATIONS),
        "non_answers": list(NON_ANSWERS),
        "data": {BITEXT: file_digest(root / BITEXT), HH: file_digest(root / HH)},
        "embedder": EMBEDDER_ID,
        "embed_words": EMBED_WORDS,
        "features": list(FEATURES),
        "C": C,
        "embedding_weight": EMBEDDING_WEIGHT,
        "format_version": VERSION,
    }


def weak_supervision_set(ctx: RunContext) -> tuple[list[Conversation], list[str]]:
    """The default's labelled set (see the package docstring): real good responses, and as many
    degradations of other real responses, a fifth of each kind."""
    from harness.lib.data import seeded_sample

    bitext, hh = default_pool(ctx)
    records: list[Conversation] = []
    labels: list[str] = []
    rng = random.Random(RECIPE_SEED)
    for pool, n in ((bitext, DEFAULT_GOOD_BITEXT), (hh, DEFAULT_GOOD_HH)):
        chosen = seeded_sample(pool, 2 * n, RECIPE_SEED, lambda r: r.source_id)
        rng.shuffle(chosen)
        good, to_degrade = chosen[:n], chosen[n : 2 * n]
        # Real short answers ("You're welcome.", "Why?"): brevity alone must not look bad.
        used = {r.source_id for r in chosen}
        good += [
            r
            for r in pool
            if r.source_id not in used and len(words_of(prompt_and_response(r)[1])) <= SHORT_WORDS
        ]
        records += good
        labels += ["good"] * len(good)
        for i, record in enumerate(to_degrade):
            kind = DEGRADATIONS[i % len(DEGRADATIONS)]
            other = rng.choice(bitext if rng.random() < 0.5 else hh)
            while other.source_id == record.source_id:
                other = rng.choice(bitext + hh)
            records.append(degrade(record, kind, rng, other))
            labels.append("bad")
    return records, labels


def quality_cache_dir() -> Path:
    """Where default classifiers are cached: ``harness.lib.models.cache_dir()/quality``."""
    from harness.lib.models import cache_dir

    return cache_dir() / "quality"


def default_model(ctx: RunContext) -> QualityModel:
    """The weak-supervision classifier: from the cache, else trained now and cached."""
    try:
        spec = recipe()
    except (ConfigError, DataError, OSError) as exc:
        raise ConfigError(
            f"{NAME}: the default classifier is trained from the Bitext and HH-RLHF data sets, "
            f"which are not available ({exc}); give train or model_path"
        ) from None
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = quality_cache_dir() / f"default-{key}.json"
    if path.is_file():
        try:
            return QualityModel.load(path, f"{NAME} (cached default)")
        except ConfigError:
            pass  # a damaged cache entry: train again, and replace it
    records, labels = weak_supervision_set(ctx)
    model = train_model(records, labels, {"source": "weak supervision", "recipe": key})
    model.save(path)
    return model
