"""The training loop's events and result survive the JSON lines a distributed job's rank 0 writes
(``harness.lib.training.events``), and a line the parent cannot read is an error, not a skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import CheckError
from harness.lib.training.events import (
    CheckpointSaved,
    EarlyStop,
    PenaltyApplied,
    Progress,
    Resumed,
    Started,
    from_json,
    to_json,
)
from harness.lib.training.launch import EventTail
from harness.lib.training.loop import LoopResult

EVENTS = [
    Resumed(step=2, total=8),
    Started(total=8, local_params=50, total_params=100, world_size=2),
    Progress(step=3, total=8, loss=1.25, grad_norm=0.5, input_tokens=640, elapsed=1.5),
    CheckpointSaved(step=4, total=8, path="/out/checkpoint-4", loss=1.0, final=False),
    PenaltyApplied(step=4, penalty=0.125),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_each_event_round_trips_through_a_json_line(event) -> None:
    line = json.dumps(to_json(event))
    assert json.loads(line)["kind"] == event.kind
    assert from_json(json.loads(line)) == event


def test_an_unknown_kind_or_a_missing_field_is_an_error() -> None:
    with pytest.raises(CheckError, match="unknown kind 'gossip'"):
        from_json({"kind": "gossip", "step": 1})
    with pytest.raises(CheckError, match="training event"):
        from_json({"kind": "progress", "step": 1})


def test_the_tail_hands_on_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    seen: list[object] = []
    tail = EventTail(path, seen.append)
    tail.drain()  # no file yet: nothing, no error
    first, second = (json.dumps(to_json(e)) for e in EVENTS[:2])
    path.write_text(first + "\n" + second[:10], encoding="utf-8")
    tail.drain()
    assert seen == EVENTS[:1]
    with path.open("a", encoding="utf-8") as fh:
        fh.write(second[10:] + "\n")
    tail.drain()
    assert seen == EVENTS[:2]


def test_a_loop_result_round_trips_with_its_checkpoints_and_stop() -> None:
    result = LoopResult(
        steps=4, total_steps=8, first_loss=2.0, last_loss=1.0, supervised_tokens=100, seconds=3.0,
        resumed_from=2, input_tokens=400, losses=[2.0, 1.5, 1.2, 1.0],
        checkpoints=[CheckpointSaved(4, 8, "/out/model", 1.0, final=True)], stopped=EarlyStop(4, "bound exceeded"),
    )  # fmt: skip
    again = LoopResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    assert again.checkpoints[0].final and again.stopped == EarlyStop(4, "bound exceeded")
