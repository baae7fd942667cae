"""Prompt variants: an arm that is another arm's model with a system prompt, ``k`` seeded
examples from the training data, or the ``k`` nearest training examples per item.

A variant wraps the inner model's :class:`~harness.lib.model_api.ModelAPI`: conversations it
renders (``render_chat`` / ``generate_chat``) get the system prompt and the example turns
before the item's own messages, so every chat benchmark serves a prompting arm unchanged.

Interface (shared by the run plan and the arms); the bodies are filled in by the prompting work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

from harness.lib.model_api import ModelAPI
from harness.lib.refs import StrictModel
from harness.types import Conversation


class PromptSpec(StrictModel):
    """How a prompting arm changes its inner arm's conversations."""

    system: str | None = Field(None, description="a system prompt put before every conversation")
    shots: int = Field(0, ge=0, description="k examples drawn (seeded) from the curated training data, the same for every item")
    nearest: int = Field(0, ge=0, description="the k training examples nearest to each item (all-MiniLM-L6-v2 cosine)")
    seed: int | None = Field(None, description="seed of the drawn examples; the suite's seed when unset")

    @model_validator(mode="after")
    def _one_kind(self) -> PromptSpec:
        if self.shots and self.nearest:
            raise ValueError("a prompt variant takes either 'shots' or 'nearest', not both")
        return self

    @property
    def needs_examples(self) -> bool:
        return bool(self.shots or self.nearest)


def prompt_material(spec: PromptSpec, pool: Sequence[Conversation], seed: int) -> dict[str, Any]:
    """What identifies the variant for the cache: the spec, the seed and the examples' digest."""
    raise NotImplementedError


def prompted(api: ModelAPI, spec: PromptSpec, pool: Sequence[Conversation], seed: int) -> ModelAPI:
    """``api`` seen through the variant; raises ``ConfigError`` (exit 2) with the token counts
    when the examples do not fit the model's context."""
    raise NotImplementedError
