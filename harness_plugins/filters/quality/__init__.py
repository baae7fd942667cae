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

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

import harness
from harness.plugin.components import Filter, FilterActionConfig, FilterOutcome, FilterResult
from harness.types import Conversation
from harness.plugin.registry import Registrar

from .features import (
    CHEAP_FEATURES,
    EMBED_WORDS,
    FEATURES,
    FORMAT,
    NAME,
    embed_texts,
    feature_width,
    features,
    last_user_turn,
    prompt_and_response,
    words_of,
)
from .model import QualityModel, _checksum, read_labelled, train_model
from .weak import (
    BITEXT,
    DEFAULT_GOOD_BITEXT,
    DEFAULT_GOOD_HH,
    DEGRADATIONS,
    HH,
    HOLDOUT_FRACTION,
    NON_ANSWERS,
    RECIPE_SEED,
    default_model,
    default_pool,
    degrade,
    quality_cache_dir,
    recipe,
    weak_supervision_set,
)

__all__ = [
    "BITEXT",
    "CHEAP_FEATURES",
    "DEFAULT_GOOD_BITEXT",
    "DEFAULT_GOOD_HH",
    "DEGRADATIONS",
    "EMBED_WORDS",
    "FEATURES",
    "FORMAT",
    "HH",
    "HOLDOUT_FRACTION",
    "NAME",
    "NON_ANSWERS",
    "RECIPE_SEED",
    "QualityClassifier",
    "QualityClassifierConfig",
    "QualityModel",
    "_checksum",
    "default_model",
    "default_pool",
    "degrade",
    "embed_texts",
    "feature_width",
    "features",
    "last_user_turn",
    "prompt_and_response",
    "quality_cache_dir",
    "read_labelled",
    "recipe",
    "train_model",
    "weak_supervision_set",
    "words_of",
]





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
