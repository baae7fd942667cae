"""Options every trainer shares: the optimisation, batching and checkpointing settings, and the
forgetting mitigations (replay, EWC, multi-task mixing).  LoRA, the fourth mitigation, is a trainer.

A mitigation's data is a ``GeneralData`` source: plain text (``format: text``, cut into windows of
``max_length`` tokens and supervised on every token, as in pre-training) or any conversation
format a reader understands (``alpaca``, ``messages``, ``csv`` with templates...), supervised on the
assistant turns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from harness.lib.refs import DataSource
from harness.lib.refs import ComponentConfig


class GeneralData(DataSource):
    """General-skill data for a mitigation: a ``DataSource`` whose ``format`` may also be ``text``."""

    limit: int | None = Field(None, ge=1, description="use at most this many examples (windows for text)")

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        if isinstance(value, dict) and "options" not in value:
            own = {k: v for k, v in value.items() if k in {*_DATA_KEYS, "limit"}}
            own["options"] = {k: v for k, v in value.items() if k not in {*_DATA_KEYS, "limit"}}
            return own
        return value


_DATA_KEYS = {"path", "format", "split", "holdout_fraction", "sample", "seed"}


class ReplayConfig(ComponentConfig):
    """Replay: a fixed share of every batch comes from general data (5-10% is typical)."""

    data: GeneralData
    fraction: float = Field(0.1, gt=0, lt=1, description="share of each batch (rows; tokens when packed)")
    weight: float = Field(1.0, gt=0, description="loss weight of replayed tokens")


class MultiTaskConfig(ComponentConfig):
    """Multi-task fine-tuning: a general task with its own supervision, mixed into every batch
    at ``fraction`` and weighted ``weight`` in the loss."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the task's label in logs and notes")
    data: GeneralData
    fraction: float = Field(0.2, gt=0, lt=1)
    weight: float = Field(1.0, gt=0)


class EWCConfig(ComponentConfig):
    """Elastic weight consolidation: a penalty ``lambda * sum F_i (theta_i - theta*_i)^2`` that
    holds the weights the general data relies on (diagonal Fisher ``F``, normalised to mean 1)
    near their values in the base model ``theta*``."""

    data: GeneralData
    lam: float = Field(alias="lambda", gt=0, description="penalty weight (the Fisher has mean 1)")
    batches: int = Field(16, ge=1, description="batches of general data the Fisher is estimated on")
    batch_size: int = Field(4, ge=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TrainingConfig(ComponentConfig):
    """What every trainer takes: optimisation, batching, checkpoints, mitigations."""

    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(8, ge=1, description="rows per optimizer step (over all ranks)")
    max_length: int = Field(256, ge=8, description="tokens per example (per row when packed)")
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    batching: Literal["pad", "length_grouped", "packed"] = Field(
        "pad",
        description="pad each batch to its longest example; group similar lengths; or pack several "
        "examples per row (attention kept within each example)",
    )
    eval_every: int = Field(0, ge=0, description="emit a checkpoint for evaluation every N steps (0: only the end)")
    save_every: int | None = Field(
        None, ge=1, description="write a resumable training state every N steps (default: eval_every, else 10)"
    )
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    replay: ReplayConfig | None = None
    ewc: EWCConfig | None = None
    multitask: list[MultiTaskConfig] = Field(default_factory=list)

    @property
    def state_every(self) -> int:
        return self.save_every or self.eval_every or 10

    @model_validator(mode="after")
    def _mix(self) -> TrainingConfig:
        share = (self.replay.fraction if self.replay else 0) + sum(m.fraction for m in self.multitask)
        if share >= 1:
            raise ValueError(f"replay and multitask take {share:.2f} of each batch; it must stay below 1")
        names = [m.name for m in self.multitask]
        if len(set(names)) < len(names) or "domain" in names or "replay" in names:
            raise ValueError("multitask names must be unique and not 'domain' or 'replay'")
        return self

    def mix(self) -> dict[str, float]:
        """Share of each batch per mixed kind of example."""
        mix = {"replay": self.replay.fraction} if self.replay else {}
        mix.update({m.name: m.fraction for m in self.multitask})
        return mix
