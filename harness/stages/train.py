"""The train stage: run the suite's trainer on the curated data, through the cache.

The cache key is the base model's fingerprint, the digest of the curated records, the trainer's
name and config, and the seed.  A hit is only served when the saved adapter still exists with the
fingerprint it had when it was written; its checkpoints are replayed as checkpoint events, so
later stages (the forgetting curve) see the same series as in the run that trained.

The trainer writes into a folder named by that key, so a run that was killed while training and
is started again finds its resumable state there and goes on from the newest complete one.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.lib.training.context import TrainContext, no_reader, plain_path
from harness.plugin.components import Backend, Trainer
from harness.lib.console import RunConsole
from harness.stages.curate import CurateOutcome
from harness.lib.models import LoadedModel, ModelRef, dir_fingerprint
from harness.lib.refs import DataSource
from harness.lib.store import Store
from harness.types import CheckpointEvent, Conversation, TrainOutput


def _event_to_json(event: CheckpointEvent) -> dict[str, Any]:
    return {**asdict(event), "path": str(event.path)}


def _event_from_json(data: dict[str, Any]) -> CheckpointEvent:
    return CheckpointEvent(**{**data, "path": Path(data["path"])})


@dataclass
class TrainStage:
    store: Store
    console: RunConsole
    use_cache: bool = True
    read_data: Callable[[DataSource, tuple], list[Conversation]] = no_reader
    resolve_path: Callable[[str, tuple], Path] = plain_path

    def _cached(self, material: dict[str, Any]) -> tuple[TrainOutput, list[CheckpointEvent]] | None:
        cached = self.store.cache_get("train", material) if self.use_cache else None
        if cached is None:
            return None
        output = TrainOutput.from_json(cached["output"])
        events = [_event_from_json(e) for e in cached.get("checkpoints", [])]
        paths = [output.path] + [e.path for e in events]
        if not all(p.is_dir() for p in paths) or dir_fingerprint(output.path) != cached["fingerprint"]:
            return None
        return output, events

    def __call__(
        self,
        trainer: Trainer,
        backend: Backend,
        base: ModelRef,
        outcome: CurateOutcome,
        seed: int,
        run_id: str,
        on_checkpoint: Callable[[CheckpointEvent], None],
    ) -> tuple[TrainOutput, bool]:
        """Train (or reuse a cached training); returns the output and whether it was cached."""
        material = {
            "base": base.fingerprint,
            "data": outcome.digest,
            "trainer": trainer.cache_material(),
            "seed": seed,
        }
        hit = self._cached(material)
        if hit is not None:
            output, events = hit
            self.console.stage("train", f"from cache: {output.path} ({output.steps} steps)")
            for event in events:
                on_checkpoint(event)
            return output, True
        events: list[CheckpointEvent] = []

        def record(event: CheckpointEvent) -> None:
            events.append(event)
            on_checkpoint(event)

        model = backend.load(base, trainable=True) if trainer.in_process else _tokenizer_only(base)
        self.console.stage("train", f"{trainer.name} on {len(outcome.records)} records")
        key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
        out_dir = self.store.artifacts / "train" / key[:16]
        with self.console.progress("training") as progress:
            ctx = TrainContext(out_dir, seed, record, progress, self.use_cache, self.read_data, self.resolve_path)
            output = trainer.train(model, outcome.records, ctx)
        del model
        gc.collect()
        value = {
            "output": output.to_json(),
            "fingerprint": dir_fingerprint(output.path),
            "checkpoints": [_event_to_json(e) for e in events],
        }
        self.store.cache_put("train", material, value)
        self.console.note(
            f"{output.steps} steps, loss {output.first_loss:.3f} -> {output.last_loss:.3f}, "
            f"{output.seconds:.0f}s; adapter {output.path}"
        )
        return output, False


def _tokenizer_only(base: ModelRef) -> LoadedModel:
    """What a trainer that loads the model in its own processes needs here: the tokenizer."""
    from harness.errors import require

    transformers = require("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base.path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(ref=base, model=None, tokenizer=tokenizer, dtype="float32")
