"""Readers for alpaca, sharegpt, messages and CSV: real data sets and malformed input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.plugin.components import RunContext
from harness.lib.data import data_dir
from harness.errors import DataError
from harness.types import Conversation, Message, Quarantined
from harness_plugins.readers.formats import (
    AlpacaReader,
    AutoReader,
    CsvReader,
    MessagesReader,
    ShareGPTReader,
)

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


def make(cls, ctx, **options):
    return cls(cls.Config(**options), ctx)


def read(reader, path: Path, source: str | None = None) -> tuple[list[Conversation], list[Quarantined]]:
    items = list(reader.read(path, source or path.name))
    records = [i for i in items if isinstance(i, Conversation)]
    quarantined = [i for i in items if isinstance(i, Quarantined)]
    assert len(records) + len(quarantined) == len(items)
    return records, quarantined


def roles(record: Conversation) -> list[str]:
    return [m.role for m in record.messages]


# ------------------------------------------------------------------------- real data sets


def test_alpaca_on_self_instruct(ctx):
    path = data_dir() / "self_instruct" / "seed_tasks_alpaca.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    records, quarantined = read(make(AlpacaReader, ctx), path, "seed.jsonl")

    assert quarantined == []
    assert len(records) == len(lines) == 175
    assert [r.source_id for r in records[:2]] == ["seed.jsonl:1", "seed.jsonl:2"]
    for record, line in zip(records, lines):
        raw = json.loads(line)
        assert roles(record) == ["user", "assistant"]
        prompt = raw["instruction"] + (f"\n\n{raw['input']}" if raw["input"].strip() else "")
        assert record.messages[0].content == prompt
        assert record.messages[1].content == raw["output"]
    # both shapes occur: with and without an input
    assert any("\n\n" in r.messages[0].content for r in records)


@pytest.mark.parametrize(
    "relative, count",
    [
        ("hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl", 2345),
        ("fastchat_dummy_conversation/dummy_conversation.jsonl", 500),
    ],
)
def test_sharegpt_on_real_files(ctx, relative, count):
    path = data_dir() / relative
    records, quarantined = read(make(ShareGPTReader, ctx), path, relative)

    assert quarantined == []
    assert len(records) == count
    assert records[-1].source_id == f"{relative}:{count}"
    first = json.loads(path.open(encoding="utf-8").readline())
    assert [m.content for m in records[0].messages] == [t["value"] for t in first["conversations"]]
    for record in records:  # human/gpt map to alternating user/assistant turns
        assert roles(record) == ["user", "assistant"] * (len(record.messages) // 2)


def test_sharegpt_fastchat_turn_counts(ctx):
    path = data_dir() / "fastchat_dummy_conversation" / "dummy_conversation.jsonl"
    records, _ = read(make(ShareGPTReader, ctx), path)
    counts = sorted(len(r.messages) for r in records)
    # documented: 167 with 2 turns, 166 with 4, 167 with 6
    assert (counts.count(2), counts.count(4), counts.count(6)) == (167, 166, 167)


def test_csv_on_bitext(ctx):
    path = data_dir() / BITEXT
    reader = make(CsvReader, ctx, user="{instruction}", assistant="{response}")
    records, quarantined = read(reader, path, BITEXT)

    assert quarantined == []
    assert len(records) == 4514
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4514
    physical = path.read_bytes().split(b"\n")
    assert records[0].source_id == f"{BITEXT}:2"  # line 1 is the header
    # the first record's response spans lines 2-10, so the second record starts on line 11
    assert records[1].source_id == f"{BITEXT}:11"
    for index in (1, 1000, 2500, 4513):
        record, row = records[index], rows[index]
        assert record.messages == (Message("user", row["instruction"]), Message("assistant", row["response"]))
        line = int(record.source_id.rsplit(":", 1)[1])
        first_line = physical[line - 1].decode("utf-8")
        assert first_line.startswith(f"{row['context']},{row['role']},")
        assert row["instruction"] in first_line


def test_csv_with_system_template_and_blank_line(ctx, tmp_path):
    path = tmp_path / "intents.csv"
    path.write_text(
        'text,label\n'
        'where is my order,track_order\n'
        '\n'
        '"cancel it,\nplease",cancel_order\n'
        'refund?,get_refund\n',
        encoding="utf-8",
    )
    reader = make(CsvReader, ctx, user="Msg: {text}", assistant="{label}", system="Intent of {label}?")
    records, quarantined = read(reader, path)

    assert quarantined == []
    assert [r.source_id for r in records] == ["intents.csv:2", "intents.csv:4", "intents.csv:6"]
    assert records[1].messages == (
        Message("system", "Intent of cancel_order?"),
        Message("user", "Msg: cancel it,\nplease"),
        Message("assistant", "cancel_order"),
    )


def test_csv_row_with_wrong_field_count_is_quarantined(ctx, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3\n4,5,6\n7,8\n", encoding="utf-8")
    records, quarantined = read(make(CsvReader, ctx, user="{a}", assistant="{b}"), path)

    assert [r.source_id for r in records] == ["rows.csv:2", "rows.csv:5"]
    assert [q.source_id for q in quarantined] == ["rows.csv:3", "rows.csv:4"]
    assert all("fields" in q.reason for q in quarantined)


def test_csv_missing_column_names_file_and_column(ctx, tmp_path):
    path = tmp_path / "intents.csv"
    path.write_text("text,label\nhi,greet\n", encoding="utf-8")
    reader = make(CsvReader, ctx, user="{text}", assistant="{intent}")
    with pytest.raises(DataError) as info:
        list(reader.read(path, "intents.csv"))
    message = str(info.value)
    assert message.startswith("intents.csv:1:")
    assert "'intent'" in message


# ------------------------------------------------------------------------ messages format


def test_messages_format(ctx, tmp_path):
    path = tmp_path / "chat.jsonl"
    lines = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}]},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    records, quarantined = read(make(MessagesReader, ctx), path)

    assert quarantined == []
    assert records[0] == Conversation(
        (Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello.")),
        "chat.jsonl:1",
    )
    assert roles(records[1]) == ["user", "assistant", "user", "assistant"]


def test_alpaca_system_field_and_auto_detection(ctx, tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"instruction": "Add", "input": "2 and 2", "output": "4", "system": "You add."},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey"}]},
        {"messages": [{"role": "user", "content": "Yo"}, {"role": "assistant", "content": "Yo!"}]},
        {"text": "not a chat format"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")  # no final newline
    records, quarantined = read(make(AutoReader, ctx), path)

    assert records[0].messages == (
        Message("system", "You add."), Message("user", "Add\n\n2 and 2"), Message("assistant", "4"),
    )
    assert [m.content for m in records[1].messages] == ["Hi", "Hey"]
    assert [m.content for m in records[2].messages] == ["Yo", "Yo!"]
    assert [(q.source_id, "unrecognised" in q.reason) for q in quarantined] == [("mixed.jsonl:4", True)]


# ------------------------------------------------------------------------- malformed input


GOOD = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}

# line number -> (bytes of that line, a fragment of its quarantine reason or None for a good line)
MALFORMED_SHAREGPT: list[tuple[bytes, str | None]] = [
    (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), None),  # 1: a UTF-8 BOM is fine on line 1
    (b'{"conversations": [{"from": "human", "value": "Hi"}', "invalid JSON"),  # 2
    (json.dumps([GOOD]).encode(), "expected a JSON object, got list"),  # 3
    (b"", None),  # 4: blank, skipped
    (json.dumps({"id": 1}).encode(), "no 'conversations' list"),  # 5: missing field
    (json.dumps({"conversations": [{"from": "human", "value": 42}, {"from": "gpt", "value": "x"}]}).encode(),
     "must be a string, got int"),  # 6: wrong type
    (json.dumps({"conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]}).encode(),
     "unknown role 'robot'"),  # 7
    (json.dumps({"conversations": [{"from": "human", "value": "Hi"}]}).encode(), "no assistant turn"),  # 8
    ('{"conversations": [{"from": "human", "value": "caf\xe9"}]}'.encode("latin-1"), "not UTF-8"),  # 9
    (b"   \t", None),  # 10: whitespace only, skipped
    (json.dumps({"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}).encode(),
     "needs 'from' and 'value'"),  # 11
    (json.dumps(GOOD).encode(), None),  # 12
]


@pytest.fixture
def malformed(tmp_path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\r\n".join(line for line, _ in MALFORMED_SHAREGPT) + b"\r\n")
    return path


def test_malformed_lines_are_quarantined_with_line_and_reason(ctx, malformed):
    records, quarantined = read(make(ShareGPTReader, ctx), malformed)

    expected = {
        f"bad.jsonl:{n}": fragment for n, (_, fragment) in enumerate(MALFORMED_SHAREGPT, start=1) if fragment
    }
    assert [q.source_id for q in quarantined] == list(expected)
    for q in quarantined:
        assert expected[q.source_id] in q.reason, (q.source_id, q.reason)
        assert q.raw  # the raw text is kept for the quarantine file
    assert [r.source_id for r in records] == ["bad.jsonl:1", "bad.jsonl:12"]
    assert records[0].messages == (Message("user", "Hi"), Message("assistant", "Hello"))


def test_bom_on_a_later_line_is_not_stripped(ctx, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    records, quarantined = read(make(ShareGPTReader, ctx), path)
    assert [r.source_id for r in records] == ["bom.jsonl:1"]
    assert [q.source_id for q in quarantined] == ["bom.jsonl:2"]
    assert "invalid JSON" in quarantined[0].reason


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"instruction": "Say hi"}, "no 'output' field"),
        ({"output": "hi"}, "no 'instruction' field"),
        ({"instruction": "Say hi", "output": 3}, "output must be a string, got int"),
        ({"instruction": "Say hi", "input": ["x"], "output": "hi"}, "input must be a string"),
    ],
)
def test_alpaca_bad_records(ctx, tmp_path, record, fragment):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "ok", "output": "fine"}) + "\n" + json.dumps(record) + "\n")
    records, quarantined = read(make(AlpacaReader, ctx), path)
    assert [r.source_id for r in records] == ["a.jsonl:1"]
    assert [q.source_id for q in quarantined] == ["a.jsonl:2"]
    assert fragment in quarantined[0].reason


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "x"}]},
         "content must be a string, got int"),
        ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "x"}]}, "messages[0].role 'tool'"),
        ({"messages": [{"role": ["user"], "content": "x"}, {"role": "assistant", "content": "x"}]}, "role must be a string"),
        ({"messages": [{"role": "user", "content": "x"}]}, "no assistant turn"),
        ({"messages": ["user: hi"]}, "messages[0] must be an object"),
    ],
)
def test_messages_bad_records(ctx, tmp_path, record, fragment):
    path = tmp_path / "m.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps(record) + "\n" + json.dumps(good) + "\n")
    records, quarantined = read(make(MessagesReader, ctx), path)
    assert [q.source_id for q in quarantined] == ["m.jsonl:1"]
    assert fragment in quarantined[0].reason
    assert [r.source_id for r in records] == ["m.jsonl:2"]


def test_missing_jsonl_file_is_a_data_error(ctx, tmp_path):
    with pytest.raises(DataError, match="gone.jsonl: data file not found"):
        list(make(AlpacaReader, ctx).read(tmp_path / "gone.jsonl", "gone.jsonl"))


def test_csv_source_ids_match_the_support_intent_holdout(ctx, tmp_path):
    """The benchmark keys its held-out split on the same ``file:line`` ids as the reader, so the
    two must number rows identically (blank lines and multi-line fields included)."""
    from harness.lib.data import split_of
    from harness_plugins.benchmarks.support_intent import SupportIntent

    path = tmp_path / "intents.csv"
    rows = [f'"msg {i}{chr(10) * (i % 3)}",intent_{i}' for i in range(16)]
    path.write_text("instruction,intent\n" + "\n\n".join(rows) + "\n", encoding="utf-8")
    source = "${data}/intents.csv"

    reader = make(CsvReader, ctx, user="{instruction}", assistant="{intent}")
    records, quarantined = read(reader, path, source)
    assert quarantined == [] and len(records) == 16
    held_by_reader = {r.source_id for r in records if split_of(r.source_id, 0.5) == "holdout"}

    config = SupportIntent.Config(path=str(path), source=source, holdout_fraction=0.5, sample=100)
    docs = SupportIntent(config, ctx).docs
    assert {f"${{data}}/{doc['id']}" for doc in docs} == held_by_reader
    assert 0 < len(docs) < 16
    by_line = {r.source_id: r.messages[1].content for r in records}
    assert all(by_line[f"${{data}}/{doc['id']}"] == doc["intent"] for doc in docs)
