"""The quality classifier as data: standardisation, coefficients and intercept of a logistic
regression over ``features``, saved as checksummed JSON (never pickle); its training, and the
labelled JSONL it trains on."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from harness.errors import ConfigError, DataError, require
from harness.types import Conversation

from .features import (
    C,
    EMBED_DIM,
    EMBED_WORDS,
    EMBEDDING_WEIGHT,
    FEATURES,
    FORMAT,
    LABELS,
    MIN_PER_CLASS,
    NAME,
    VERSION,
    feature_width,
    features,
)





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
