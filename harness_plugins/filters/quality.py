"""The ``quality_classifier`` filter: a small learned judge of whether a response is worth
training on.

Rule-based filters catch what can be written as a rule (duplicates, PII, loops, bad format); a
response can pass them all and still be useless: cut off after a few words, a shuffle of real
words, the answer to another question, or an empty "I don't know.".  This filter scores each
record with a lightweight classifier and removes those it finds probably bad.

**What it looks at.**  The record's *response* is its final assistant turn; its *prompt* is the
conversation before it (user and assistant turns, one per line: a reply in a long chat answers the
conversation, not only the last user line), and its *question* the last user turn.  Features
(``FEATURES``, in this order):

* the all-MiniLM-L6-v2 sentence embeddings (normalised, 384 values each) of the response's first
  ``EMBED_WORDS`` words and of the prompt's last ``EMBED_WORDS`` words, concatenated (the start
  of an answer carries its topic and style; the end of the prompt is what is being answered;
  and embedding whole long texts would dominate the cost);
* cheap text features (``CHEAP_FEATURES``): the response's length in words
  (``log(1 + words)``), the share of its non-space characters that are not alphanumeric, the
  share of its non-blank lines that repeat an earlier line, whether it ends with punctuation,
  whether it starts like a sentence, the share of its sentence ends followed by a lower-case word
  (natural text starts sentences with a capital; shuffled words mostly do not), and the share of
  the prompt's content words it uses;
* the cosine similarities of the response's embedding with the prompt's and with the question's.
  A linear model on two embeddings side by side cannot tell whether they belong together; their
  similarity can, and it is what exposes an answer to another question.

Every feature is standardised (mean and scale of the training set; the 768 embedding values are
then down-weighted by ``EMBEDDING_WEIGHT`` so that they do not drown the few cheap features under
the L2 penalty) and the model is scikit-learn's ``LogisticRegression`` (L2, ``C = 1``,
``class_weight="balanced"``).  A record is removed when ``P(bad) > threshold`` (reason
``low_quality``, detail ``"P(bad) 0.91"``).

**Where the classifier comes from** (one of):

* ``train``: a JSONL file of ``{"messages": [{"role", "content"}, ...], "label": "good"|"bad"}``
  (at least ``MIN_PER_CLASS`` of each; suite-relative, or ``${data}/...``), trained at first use;
* ``model_path``: a classifier saved with ``QualityModel.save``: plain JSON holding the feature
  spec, standardisation, coefficients and intercept, and a sha256 of all of it (a check against
  accidental edits and truncation, not a signature).  Pickle/joblib files are refused by design:
  loading one runs code from the file, and a classifier is data;
* neither (the documented default): a classifier trained at first use on a built-in
  weak-supervision set, from the real data sets under ``harness.lib.data.data_dir()``:

  - good: real responses, ``DEFAULT_GOOD_BITEXT`` from the Bitext customer-support CSV
    (user = instruction, assistant = response) and ``DEFAULT_GOOD_HH`` final answers of the
    HH-RLHF helpful-base conversations (``chosen``, ShareGPT conversion), plus every other real
    answer of at most ``SHORT_WORDS`` words ("You're welcome.", "Why?"), so that brevity alone
    does not make an answer bad;
  - bad: synthetic degradations of ``DEFAULT_GOOD_BITEXT + DEFAULT_GOOD_HH`` *other* real
    responses of the same two sets (never a response used as a good example), a fifth of each
    kind (``degrade``): truncated mid-sentence to at most
    five words, one line repeated over and over, the response's words shuffled (word salad), the
    response of an unrelated record swapped in, and an empty-ish one-liner
    (``NON_ANSWERS``: "I don't know.", "No idea.", a bare "Yes." or "OK.");
  - only records in the ``train`` half of ``harness.lib.data.split_of(source_id, 0.5, seed=2024)``
    are used, so the ``holdout`` half stays available to measure the default on unseen data.

  The trained weights are cached as JSON in ``harness.lib.models.cache_dir()/quality/``, keyed by a
  hash of the recipe (its version, sizes and seeds, the data files' digests, the embedder and the
  feature spec), so later runs and other processes load it in milliseconds (a damaged entry is
  retrained and replaced).  Training it takes a few minutes on two CPU cores (a few thousand texts
  to embed); without the data sets, the default is a ``ConfigError`` asking for ``train`` or
  ``model_path``.

Embeddings are memoised per process (by text), so scoring the same texts twice costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

import harness
from harness.errors import ConfigError, DataError, require
from harness.plugin.components import (
    Filter,
    FilterActionConfig,
    FilterOutcome,
    FilterResult,
    RunContext,
)
from harness.types import Conversation, Message
from harness.plugin.registry import Registrar

NAME = "quality_classifier"
FORMAT = "finetune-harness/quality-classifier"
VERSION = 1
EMBED_WORDS = 64
"""Words of the response and of the prompt that are embedded."""
EMBED_DIM = 384
MIN_PER_CLASS = 5
C = 1.0
EMBEDDING_WEIGHT = 0.3
"""Standardised embedding values are multiplied by this before the fit (see ``train_model``)."""
LABELS = ("good", "bad")

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

_MEMO_LIMIT = 20000
_memo: dict[str, Any] = {}

# ------------------------------------------------------------------------------- features

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(\S)")
_ENDS_WITH_PUNCTUATION = re.compile(r"[.!?:;)\]\"'’”`*>]\s*$")  # noqa: RUF001 (typographic quotes end sentences)
_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset(
    ["the", "and", "or", "but", "if", "of", "to", "in", "on", "for", "with", "at", "by", "from", "is", "are", "was", "were", "be", "been", "am", "you", "he", "she", "it", "we", "they", "my", "your", "me", "this", "that", "what", "how", "can", "do", "does", "did", "have", "has", "not", "no", "yes", "so", "as", "its", "our", "their", "there", "here", "would", "could", "should", "will", "just", "like", "about", "get", "any", "some", "all"]
)


def words_of(text: str) -> list[str]:
    return text.split()


def log_words(prompt: str, response: str) -> float:
    """``log(1 + words)``: very short answers are suspect, and length matters on a log scale."""
    return math.log1p(len(words_of(response)))


def non_alnum_share(prompt: str, response: str) -> float:
    """Share of the non-space characters that are neither letters nor digits."""
    chars = [c for c in response if not c.isspace()]
    return sum(not c.isalnum() for c in chars) / len(chars) if chars else 0.0


def repeated_line_share(prompt: str, response: str) -> float:
    """Share of the non-blank lines whose (whitespace-collapsed, case-folded) text is that of an
    earlier line."""
    seen: set[str] = set()
    lines = [" ".join(line.split()).casefold() for line in response.splitlines()]
    lines = [line for line in lines if line]
    repeats = 0
    for line in lines:
        repeats += line in seen
        seen.add(line)
    return repeats / len(lines) if lines else 0.0


def ends_with_punctuation(prompt: str, response: str) -> float:
    """1.0 when the response ends like a finished sentence or block (punctuation, a closing
    bracket or quote, a code fence), else 0.0: a cut-off answer usually does not."""
    return 1.0 if _ENDS_WITH_PUNCTUATION.search(response) else 0.0


def starts_like_a_sentence(prompt: str, response: str) -> float:
    """1.0 when the response starts with a capital letter or a non-letter (digit, markup)."""
    first = response.lstrip()[:1]
    return 1.0 if first and (first.isupper() or not first.isalpha()) else 0.0


def lowercase_after_sentence_end(prompt: str, response: str) -> float:
    """Share of sentence ends (``.``, ``!``, ``?``) followed by a word starting in lower case:
    natural text starts sentences with a capital, shuffled words mostly do not."""
    starts = [m.group(1) for m in _SENTENCE_END.finditer(response)]
    letters = [s for s in starts if s.isalpha()]
    return sum(s.islower() for s in letters) / len(letters) if letters else 0.0


def prompt_word_overlap(prompt: str, response: str) -> float:
    """Share of the content words of the prompt's last ``EMBED_WORDS`` words (three letters or
    more, not a stop word) that the response uses: an answer to another question shares few."""
    asked = {w for w in _WORD.findall(_last_words(prompt).casefold()) if len(w) > 2} - _STOPWORDS
    if not asked:
        return 0.0
    return len(asked & set(_WORD.findall(response.casefold()))) / len(asked)


CHEAP_FEATURES: dict[str, Callable[[str, str], float]] = {
    "log_words": log_words,
    "non_alnum_share": non_alnum_share,
    "repeated_line_share": repeated_line_share,
    "ends_with_punctuation": ends_with_punctuation,
    "starts_like_a_sentence": starts_like_a_sentence,
    "lowercase_after_sentence_end": lowercase_after_sentence_end,
    "prompt_word_overlap": prompt_word_overlap,
}
"""Cheap features, ``f(prompt, response) -> float``."""
FEATURES: tuple[str, ...] = (
    "response_embedding",
    "prompt_embedding",
    *CHEAP_FEATURES,
    "prompt_response_similarity",
    "last_user_response_similarity",
)
"""The feature blocks, in order; the two embeddings are ``EMBED_DIM`` values each."""


def feature_width(features: Sequence[str] = FEATURES) -> int:
    return sum(EMBED_DIM if name.endswith("_embedding") else 1 for name in features)


def prompt_and_response(record: Conversation) -> tuple[str, str]:
    """The record's final assistant turn (its *response*, "" when there is none) and its
    *prompt*: the user and assistant turns before it, one per line (a reply in a long chat
    answers the conversation, not only the last user line)."""
    messages = record.messages
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=len(messages))
    before = [m.content for m in messages[:last] if m.role != "system"]
    response = messages[last].content if last < len(messages) else ""
    return "\n".join(before), response


def _first_words(text: str) -> str:
    return " ".join(words_of(text)[:EMBED_WORDS])


def _last_words(text: str) -> str:
    return " ".join(words_of(text)[-EMBED_WORDS:])


def embed_texts(clipped: Sequence[str]) -> Any:
    """Normalised MiniLM embeddings of texts (float64, one row per text), memoised per
    process."""
    np = require("numpy")
    from harness.lib.embed import embed

    if not clipped:
        return np.zeros((0, EMBED_DIM))
    missing = sorted({t for t in clipped if t not in _memo}, key=len)  # less padding
    table: dict[str, Any] = {}
    if missing:
        table = {t: row.astype(np.float64) for t, row in zip(missing, embed(missing))}
    rows = np.vstack([_memo[t] if t in _memo else table[t] for t in clipped])
    if len(_memo) + len(table) > _MEMO_LIMIT:
        _memo.clear()
    if len(table) <= _MEMO_LIMIT:
        _memo.update(table)
    return rows


def last_user_turn(record: Conversation) -> str:
    """The last user turn before the final assistant turn ("" when there is none)."""
    messages = record.messages
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=len(messages))
    return next((m.content for m in reversed(messages[:last]) if m.role == "user"), "")


def features(records: Sequence[Conversation]) -> Any:
    """The raw (unstandardised) feature matrix of ``records``, ``FEATURES`` order, float64."""
    np = require("numpy")
    pairs = [prompt_and_response(r) for r in records]
    if not pairs:
        return np.zeros((0, feature_width()))
    n = len(pairs)
    texts = [_last_words(p) for p, _ in pairs] + [_first_words(r) for _, r in pairs]
    texts += [_last_words(last_user_turn(r)) for r in records]  # = the prompt when single-turn
    embedded = embed_texts(texts)
    prompts, responses, asks = embedded[:n], embedded[n : 2 * n], embedded[2 * n :]
    cheap = np.array(
        [[fn(prompt, response) for fn in CHEAP_FEATURES.values()] for prompt, response in pairs],
        dtype=np.float64,
    )
    similarity = np.sum(prompts * responses, axis=1, keepdims=True)
    ask_similarity = np.sum(asks * responses, axis=1, keepdims=True)
    return np.hstack([responses, prompts, cheap, similarity, ask_similarity])


# -------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class QualityModel:
    """A trained classifier as plain numbers: ``P(bad) = sigmoid(coef . (x - mean) / scale +
    intercept)`` over the ``features`` of a record."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    trained_on: dict[str, Any]
    features: tuple[str, ...] = FEATURES

    def predict_proba(self, records: Sequence[Conversation]) -> list[float]:
        """P(bad) of each record, in order."""
        return self.predict_matrix(features(records))

    def predict_matrix(self, matrix: Any) -> list[float]:
        np = require("numpy")
        z = (matrix - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.coef) + self.intercept
        return [float(p) for p in 1.0 / (1.0 + np.exp(-np.clip(logits, -500, 500)))]

    # ------------------------------------------------------------------------- JSON

    def payload(self) -> dict[str, Any]:
        """Everything the file holds but its checksum."""
        from harness.lib.embed import EMBEDDER_ID

        return {
            "format": FORMAT,
            "version": VERSION,
            "embedder": EMBEDDER_ID,
            "embed_words": EMBED_WORDS,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "trained_on": self.trained_on,
        }

    def to_json(self) -> dict[str, Any]:
        payload = self.payload()
        return {**payload, "sha256": _checksum(payload)}

    def save(self, path: Path) -> Path:
        """Write the classifier as JSON (atomically); floats round-trip exactly."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path, what: str = f"{NAME}.model_path") -> QualityModel:
        """Read and validate a saved classifier; anything wrong is a ``ConfigError`` naming the
        file and the problem."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{what}: not found: {path}") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{what}: {path} is not a JSON classifier file ({exc})") from None
        try:
            return cls.from_json(data)
        except ValueError as exc:
            raise ConfigError(f"{what}: {path}: {exc}") from None

    @classmethod
    def from_json(cls, data: Any) -> QualityModel:
        """Validate and build; raises ``ValueError`` saying what is wrong."""
        from harness.lib.embed import EMBEDDER_ID

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        if data.get("version") != VERSION:
            raise ValueError(
                f"format version {data.get('version')!r}, this harness reads {VERSION}"
            )
        checksum = data.get("sha256")
        payload = {k: v for k, v in data.items() if k != "sha256"}
        if checksum != _checksum(payload):
            raise ValueError("checksum mismatch: the file was changed or damaged after saving")
        if data.get("embedder") != EMBEDDER_ID or data.get("embed_words") != EMBED_WORDS:
            raise ValueError("saved for another embedder or embedding length; retrain it")
        names = data.get("features")
        if names != list(FEATURES):
            raise ValueError(f"feature spec {names!r} is not this harness's {list(FEATURES)!r}")
        width = feature_width(names)
        vectors: dict[str, Any] = {key: data.get(key) for key in ("mean", "scale", "coef")}
        for key, value in vectors.items():
            if not isinstance(value, list) or len(value) != width:
                raise ValueError(f"{key!r} must be a list of {width} numbers")
            if not all(_finite(x) for x in value):
                raise ValueError(f"{key!r} holds a value that is not a finite number")
        if not all(x > 0 for x in vectors["scale"]):
            raise ValueError("'scale' values must be positive")
        if not _finite(data.get("intercept")):
            raise ValueError("'intercept' must be a finite number")
        trained_on = data.get("trained_on")
        if not isinstance(trained_on, dict):
            raise ValueError("'trained_on' must be an object")
        return cls(
            mean=tuple(float(x) for x in vectors["mean"]),
            scale=tuple(float(x) for x in vectors["scale"]),
            coef=tuple(float(x) for x in vectors["coef"]),
            intercept=float(data["intercept"]),
            trained_on=trained_on,
            features=tuple(names),
        )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checksum(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def train_model(
    records: Sequence[Conversation], labels: Sequence[str], trained_on: dict[str, Any]
) -> QualityModel:
    """Fit the classifier on labelled records (``"good"`` / ``"bad"``)."""
    np = require("numpy")
    linear_model = require("sklearn.linear_model", extra="parity")
    counts = {label: sum(1 for x in labels if x == label) for label in LABELS}
    if min(counts.values()) < MIN_PER_CLASS:
        raise ConfigError(
            f"{NAME}: training needs at least {MIN_PER_CLASS} good and {MIN_PER_CLASS} bad "
            f"examples, got {counts['good']} good and {counts['bad']} bad"
        )
    matrix = features(records)
    mean = matrix.mean(axis=0)
    scale = matrix.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    # Down-weight the 768 embedding columns (a larger scale is a smaller standardised value,
    # hence a stronger L2 penalty), so that the handful of cheap features can carry weight.
    scale[: 2 * EMBED_DIM] /= EMBEDDING_WEIGHT
    y = np.array([label == "bad" for label in labels], dtype=int)
    model = linear_model.LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
    model.fit((matrix - mean) / scale, y)
    return QualityModel(
        mean=tuple(float(x) for x in mean),
        scale=tuple(float(x) for x in scale),
        coef=tuple(float(x) for x in model.coef_[0]),
        intercept=float(model.intercept_[0]),
        trained_on={**trained_on, **counts},
    )


def read_labelled(path: Path, what: str = f"{NAME}.train") -> tuple[list[Conversation], list[str]]:
    """The records and labels of a JSONL training file (``{messages, label}`` per line)."""
    from harness.lib.data import read_jsonl_objects
    from harness.lib.records import RecordError, from_messages

    if not path.is_file():
        raise ConfigError(f"{what}: not found: {path}")
    records, labels = [], []
    try:
        rows = read_jsonl_objects(path)
    except DataError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    for line, row in rows:
        label = row.get("label")
        if label not in LABELS:
            raise ConfigError(
                f'{what}: {path}:{line}: \'label\' must be "good" or "bad", got {label!r}'
            )
        try:
            records.append(from_messages(row, f"{path.name}:{line}"))
        except RecordError as exc:
            raise ConfigError(f"{what}: {path}:{line}: {exc}") from None
        labels.append(label)
    return records, labels


# ------------------------------------------------------------------- weak supervision


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
    """The default's labelled set (see the module docstring): real good responses, and as many
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


# ------------------------------------------------------------------------------- filter


class QualityClassifierConfig(FilterActionConfig):
    train: str | None = Field(
        None,
        description="JSONL of {messages, label: good|bad} to train on (suite-relative or "
        "${data}/...)",
    )
    model_path: str | None = Field(
        None, description="a classifier saved as JSON by QualityModel.save (never pickle)"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="remove a record when P(bad) > this")

    @model_validator(mode="after")
    def _one_source(self) -> QualityClassifierConfig:
        if self.train is not None and self.model_path is not None:
            raise ValueError("give train or model_path, not both")
        return self


class QualityClassifier(Filter[QualityClassifierConfig]):
    name = NAME
    description = (
        "drops records a small classifier (MiniLM embeddings + text features, logistic "
        "regression) finds probably bad: truncated, repeated, word salad, off-topic, non-answers"
    )
    Config = QualityClassifierConfig

    @property
    def cfg(self) -> QualityClassifierConfig:
        return self.config

    def _path(self, raw: str) -> Path:
        from harness.lib.data import resolve_data_path

        return resolve_data_path(raw, self.ctx.suite_dir)

    @cached_property
    def classifier(self) -> QualityModel:
        """The classifier, trained or loaded on first use."""
        if self.cfg.model_path is not None:
            return QualityModel.load(self._path(self.cfg.model_path))
        if self.cfg.train is not None:
            path = self._path(self.cfg.train)
            records, labels = read_labelled(path)
            return train_model(records, labels, {"source": path.name})
        return default_model(self.ctx)

    def cache_material(self) -> dict[str, Any]:
        """Config and the classifier's identity: the file's digest, or the default recipe."""
        from harness.lib.data import file_digest

        material = super().cache_material()
        raw = self.cfg.model_path or self.cfg.train
        if raw is not None:
            path = self._path(raw)
            material["classifier"] = file_digest(path) if path.is_file() else "missing"
        else:
            material["classifier"] = recipe()
        return material

    def predict_proba(self, records: Sequence[Conversation]) -> list[float]:
        """P(bad) of each record, in order."""
        return self.classifier.predict_proba(records)

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        outcome = FilterOutcome(self.name, self.cfg.action)
        probabilities = self.predict_proba(records) if records else []
        for record, p in zip(records, probabilities):
            if p > self.cfg.threshold:
                outcome.remove(record, "low_quality", f"P(bad) {p:.2f}")
            else:
                outcome.keep(record)
        return outcome.result()


@harness.hookimpl
def harness_register_filters(registrar: Registrar) -> None:
    registrar.add(QualityClassifier)
