"""Small config models shared by every section of a suite: component references and data sources.

They live apart from :mod:`harness.suite.config` so that sections defined elsewhere (such as the parity
stage's pipelines) can use them without importing the whole suite model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """Base of suite sections: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentRef(StrictModel):
    """A component by name with its options: ``lora`` or ``{name: lora, r: 8}``."""

    name: str = Field(description="the component's registered name")
    options: dict[str, Any] = Field(default_factory=dict, description="options passed to the component's config (written inline beside name)")

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "options" not in value:
            # A subclass's own fields (e.g. the train block's ``seeds``) stay beside ``name``.
            own = set(cls.model_fields) - {"name", "options"}
            rest = {k: v for k, v in value.items() if k != "name" and k not in own}
            return {"name": value.get("name"), "options": rest, **{k: value[k] for k in own if k in value}}
        return value


class DataSource(StrictModel):
    """One training data file, read by the reader named in ``format``.

    ``split`` keeps the train or holdout part of a stable hash split of the records' source ids
    (the same split that benchmarks use for held-out items); ``sample`` then keeps a seeded
    random sample of that many records (more than there are is an error; ``all`` keeps every
    record).  Keys other than these go to the reader's options.
    """

    path: str = Field(description="relative to the suite, or '${data}/...' for the data folder")
    format: str = Field("auto", description="reader component: alpaca, sharegpt, messages, csv, auto")
    split: Literal["train", "holdout", "all"] = Field("all", description="keep the train or holdout part of the stable hash split, or all records")
    holdout_fraction: float = Field(0.1, ge=0, le=1, description="fraction of source ids in the holdout part")
    sample: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        None, description="keep a seeded sample of this many records ('all': every record)"
    )
    seed: int = Field(0, description="seed of the sample")
    options: dict[str, Any] = Field(default_factory=dict, description="options passed to the component's config (written inline beside name)")

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        if isinstance(value, dict) and "options" not in value:
            own = {k: v for k, v in value.items() if k in _DATA_KEYS}
            own["options"] = {k: v for k, v in value.items() if k not in _DATA_KEYS}
            return own
        return value


_DATA_KEYS = {"path", "format", "split", "holdout_fraction", "sample", "seed"}


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
