"""Turn a trainer's inputs into ``Example`` lists: the curated conversations (``domain``) and the
general data of its mitigations (replay, multi-task, the EWC Fisher set)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.types import Loc
from harness.errors import CheckError, DataError
from harness.lib.training.config import GeneralData, TrainingConfig
from harness.lib.training.examples import (
    DOMAIN,
    Example,
    encode_conversations,
    encode_text,
)
from harness.lib.training.context import TrainContext
from harness.types import Conversation


@dataclass
class TrainingData:
    examples: list[Example]
    fisher: list[Example] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(e.kind == kind for e in self.examples)


def general_examples(
    tokenizer: Any, src: GeneralData, ctx: TrainContext, loc: Loc, max_length: int, kind: str, weight: float
) -> tuple[list[Example], list[str]]:
    """Examples of one mitigation source; an empty result is a ``DataError`` naming it."""
    if src.format == "text":
        path = ctx.resolve_path(src.path, loc + ("path",))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the {kind} text: {exc}") from None
        examples, notes = encode_text(tokenizer, text, max_length, kind, weight, src.limit), list[str]()
    else:
        records = ctx.read_data(src, loc)
        records = records[: src.limit] if src.limit else records
        examples, notes = encode_conversations(tokenizer, records, max_length, kind, weight)
    if not examples:
        raise DataError(f"{src.path}: no {kind} example of at most {max_length} tokens")
    return examples, notes


def prepare(
    tokenizer: Any, records: Sequence[Conversation], cfg: TrainingConfig, ctx: TrainContext
) -> TrainingData:
    """Encode the curated records and every mitigation's data, in a fixed order."""
    examples, notes = encode_conversations(tokenizer, records, cfg.max_length, DOMAIN)
    if not examples:
        raise CheckError("no training example has an assistant token within max_length")
    data = TrainingData(examples, notes=notes)
    if cfg.replay is not None:
        more, extra = general_examples(
            tokenizer, cfg.replay.data, ctx, ("train", "replay", "data"), cfg.max_length, "replay", cfg.replay.weight
        )
        data.examples += more
        data.notes += extra + [f"replay: {len(more)} examples from {cfg.replay.data.path}, {cfg.replay.fraction:.0%} of each batch"]
    for index, task in enumerate(cfg.multitask):
        more, extra = general_examples(
            tokenizer, task.data, ctx, ("train", "multitask", index, "data"), cfg.max_length, task.name, task.weight
        )
        data.examples += more
        data.notes += extra + [f"multitask {task.name}: {len(more)} examples, {task.fraction:.0%} of each batch, weight {task.weight}"]
    if cfg.ewc is not None:
        need = cfg.ewc.batches * cfg.ewc.batch_size
        fisher, extra = general_examples(
            tokenizer, cfg.ewc.data, ctx, ("train", "ewc", "data"), cfg.max_length, "ewc", 1.0
        )
        data.fisher = fisher[:need]
        data.notes += extra + [f"ewc: Fisher on {len(data.fisher)} examples of {cfg.ewc.data.path}, lambda {cfg.ewc.lam}"]
    return data
