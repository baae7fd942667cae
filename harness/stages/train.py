"""The train stage: run the suite's trainer on the curated data, through the cache.

The cache key is the base model's fingerprint, the digest of the curated records, the trainer's
name and config, and the seed.  A hit is only served when the saved adapter still exists with the
fingerprint it had when it was written; its checkpoints are replayed as checkpoint events, so
later stages (the forgetting curve) see the same series as in the run that trained.

The trainer writes into a folder named by that key, so a run that was killed while training and
is started again finds its resumable state there and goes on from the newest complete one.  A run
holds the key's lock while it trains: a second run of the same candidate on the same store waits
("waiting for another run that is training the same candidate") and then reuses the result.

A checkpoint callback may end the training early by raising ``StopTraining`` (the live forgetting
probes do, under ``forgetting.stop``): the stage writes the request where the trainer's loop looks
for it between steps.  A stopped training is not cached: it depends on the probes and the stop
rule as much as on the trainer, so a later run trains (resuming from the saved state) and decides
again.

Paths in the cache entry are relative to the store, and the entry is also written beside the
adapter (``cache-entry.json``), so ``harness store repair`` can put a verifying training back into
a new store when the old database is lost.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.lib.training.context import TrainContext, no_reader, plain_path
from harness.lib.training.stop import StopTraining, clear_stop, request_stop
from harness.plugin.components import Backend, Trainer
from harness.lib.console import RunConsole
from harness.stages.curate import CurateOutcome
from harness.lib.models import LoadedModel, ModelRef, dir_fingerprint
from harness.lib.refs import DataSource
from harness.lib.store import Store, cache_key
from harness.lib.storehealth import ENTRY_FILE, training_problem
from harness.types import CheckpointEvent, Conversation, Loc, TrainOutput


def _event_to_json(event: CheckpointEvent, store: Store) -> dict[str, Any]:
    return {**asdict(event), "path": store.relative(event.path)}


def _event_from_json(data: dict[str, Any], store: Store) -> CheckpointEvent:
    return CheckpointEvent(**{**data, "path": store.absolute(data["path"])})


def output_from_json(data: dict[str, Any], store: Store) -> TrainOutput:
    return replace(TrainOutput.from_json(data), path=store.absolute(str(data["path"])))


def cached_training(store: Store, value: dict[str, Any]) -> tuple[TrainOutput, list[CheckpointEvent]] | None:
    """A cached training's output and checkpoints, if its folders are all there and the adapter
    still has the fingerprint it had when it was written."""
    if training_problem(store.root, value) is not None:
        return None
    output = output_from_json(value["output"], store)
    return output, [_event_from_json(e, store) for e in value.get("checkpoints", [])]


@dataclass
class TrainStage:
    store: Store
    console: RunConsole
    use_cache: bool = True
    read_data: Callable[[DataSource, Loc], list[Conversation]] = no_reader
    resolve_path: Callable[[str, Loc], Path] = plain_path

    def _cached(self, material: dict[str, Any]) -> tuple[TrainOutput, list[CheckpointEvent]] | None:
        cached = self.store.cache_get("train", material) if self.use_cache else None
        return None if cached is None else cached_training(self.store, cached)

    def _reuse(
        self, hit: tuple[TrainOutput, list[CheckpointEvent]], on_checkpoint: Callable[[CheckpointEvent], None]
    ) -> tuple[TrainOutput, bool]:
        output, events = hit
        self.console.stage("train", f"from cache: {output.path} ({output.steps} steps)")
        for event in events:
            try:
                on_checkpoint(event)
            except StopTraining as stop:  # this training ran to its end before; it is kept whole
                self.console.note(f"the cached training ran to the end; the stop rule would have ended it: {stop}")
        return output, True

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
            return self._reuse(hit, on_checkpoint)
        key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

        def waiting() -> None:
            self.console.stage("train", "waiting for another run that is training the same candidate", style="yellow")

        with self.store.lock("train", key, on_wait=waiting):
            hit = self._cached(material)  # the run this one waited for has finished it
            if hit is not None:
                return self._reuse(hit, on_checkpoint)
            output_dir = self.store.artifacts / "train" / key[:16]
            self.store.training = output_dir  # named by the line an interruption prints
            try:
                output = self._train(trainer, backend, base, outcome, seed, output_dir, material, on_checkpoint)
            except Exception:
                self.store.training = None
                raise
            self.store.training = None
        return output, False

    def _train(
        self,
        trainer: Trainer,
        backend: Backend,
        base: ModelRef,
        outcome: CurateOutcome,
        seed: int,
        out_dir: Path,
        material: dict[str, Any],
        on_checkpoint: Callable[[CheckpointEvent], None],
    ) -> TrainOutput:
        events: list[CheckpointEvent] = []
        clear_stop(out_dir)

        def record(event: CheckpointEvent) -> None:
            events.append(event)
            try:
                on_checkpoint(event)
            except StopTraining as stop:
                request_stop(out_dir, stop.request)

        model = backend.load(base, trainable=True) if trainer.in_process else _tokenizer_only(base)
        self.console.stage("train", f"{trainer.name} on {len(outcome.records)} records")
        with self.console.progress("training") as progress:
            ctx = TrainContext(out_dir, seed, record, progress, self.use_cache, self.read_data, self.resolve_path)
            output = trainer.train(model, outcome.records, ctx)
        del model
        gc.collect()
        if output.stopped_step is not None:
            self.console.note(f"stopped early after {output.steps} steps: {output.stop_reason} (not cached)")
            return output
        value = {
            "output": {**output.to_json(), "path": self.store.relative(output.path)},
            "fingerprint": dir_fingerprint(output.path),
            "checkpoints": [_event_to_json(e, self.store) for e in events],
        }
        _write_entry(out_dir / ENTRY_FILE, material, value)
        self.store.cache_put("train", material, value)
        self.console.note(
            f"{output.steps} steps, loss {output.first_loss:.3f} -> {output.last_loss:.3f}, "
            f"{output.seconds:.0f}s; adapter {output.path}"
        )
        return output


def _write_entry(path: Path, material: dict[str, Any], value: dict[str, Any]) -> None:
    """The cache entry beside the artifact it describes (written atomically), for repair."""
    key, text = cache_key("train", material)
    entry = {"key": key, "kind": "train", "material": text, "value": value}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _tokenizer_only(base: ModelRef) -> LoadedModel:
    """What a trainer that loads the model in its own processes needs here: the tokenizer."""
    from harness.errors import require

    transformers = require("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base.path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(ref=base, model=None, tokenizer=tokenizer, dtype="float32")
