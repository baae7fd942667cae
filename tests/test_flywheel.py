"""``harness curate --from-log``: production chat logs into new training records.

The training set is real HH-RLHF conversations (ShareGPT); the log is other real HH-RLHF
conversations written as chat-completions interactions with planted feedback (ratings, thumbs,
rephrases), copies and a near-copy of training records, and malformed lines of every kind.
Each line's fate is written beside it, so the kept set is asserted exactly, and a second run
must append nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness.lib.minhash import jaccard, shingle_strings

from harness.cli import main
from harness.plugin.components import RunContext
from harness.stages.curate_report import Examples
from harness.tools.curate_file import DataFile, build_filters
from harness.lib.data import data_dir
from harness.tools.flywheel import (
    FlywheelJob,
    FlywheelOptions,
    find_known,
    parse_interaction,
    run_flywheel,
)
from harness.lib.refs import ComponentRef
from harness.types import Conversation, Message

HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
N_TRAIN = 60
EMAIL = "anna.smith@example.com"


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``harness`` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def hh() -> list[dict[str, Any]]:
    with (data_dir() / HH).open(encoding="utf-8") as fh:
        return [json.loads(line) for line, _ in zip(fh, range(N_TRAIN + 40))]


def turns(record: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in record["conversations"]]


def interaction(
    record: dict[str, Any],
    feedback: dict[str, Any] | None,
    *,
    answer: str | None = None,
    system: str | None = None,
    finish: str = "stop",
    envelope: bool = False,
    parts: bool = False,
    user_prefix: str = "",
) -> str:
    """A log line: the record's turns but the last as the request, the last as the answer."""
    messages = turns(record)
    request = messages[:-1]
    if user_prefix:
        request[-1] = {**request[-1], "content": user_prefix + request[-1]["content"]}
    if parts:
        request = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in request]
    if system:
        request = [{"role": "system", "content": system}, *request]
    content = messages[-1]["content"] if answer is None else answer
    body = {"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]}
    line: dict[str, Any] = {"request": {"model": "support-bot", "messages": request}}
    line["response"] = {"status_code": 200, "body": body} if envelope else body
    if feedback is not None:
        line["feedback"] = feedback
    return json.dumps(line, ensure_ascii=False)


@dataclass(frozen=True)
class LogLine:
    data: bytes
    fate: str  # kept | dropped | quarantined | blank
    reason: str = ""


def long_training_index(hh: list[dict[str, Any]]) -> int:
    """A training record long enough that one changed word keeps Jaccard >= 0.8."""
    return next(i for i, r in enumerate(hh[:N_TRAIN]) if sum(len(t["value"].split()) for t in r["conversations"]) > 150)


def near_copy(record: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(record))
    words = copy["conversations"][-1]["value"].split(" ")
    words[len(words) // 2] = "zebra"
    copy["conversations"][-1]["value"] = " ".join(words)
    return copy


def build_log(hh: list[dict[str, Any]]) -> list[LogLine]:
    fresh = hh[N_TRAIN:]
    near = long_training_index(hh)

    def line(text: str, fate: str, reason: str = "") -> LogLine:
        return LogLine(text.encode("utf-8"), fate, reason)

    return [
        LogLine(b"\xef\xbb\xbf" + interaction(fresh[0], {"rating": 5}).encode(), "kept"),  # 1 (BOM)
        line(interaction(fresh[1], {"thumbs": "up"}), "kept"),  # 2
        line(interaction(fresh[2], {"rating": 4, "rephrased": False}), "kept"),  # 3: boundary
        line(interaction(fresh[3], {"rating": 3}), "dropped", "low_rating"),  # 4
        line(interaction(fresh[4], {"rating": 1, "thumbs": "up"}), "dropped", "low_rating"),  # 5: conflict
        line(interaction(fresh[5], {"thumbs": "down"}), "dropped", "thumbs_down"),  # 6
        line(interaction(fresh[6], {"rating": 5, "rephrased": True}), "dropped", "rephrased"),  # 7
        line(interaction(fresh[7], {"thumbs": "up", "rephrased": True}), "dropped", "rephrased"),  # 8
        line(interaction(fresh[8], None), "dropped", "unrated"),  # 9
        line(interaction(fresh[9], {"rephrased": False}), "dropped", "unrated"),  # 10
        line(interaction(hh[5], {"rating": 5}, system="You are a helpful assistant."), "dropped", "known"),  # 11
        line(interaction(near_copy(hh[near]), {"thumbs": "up"}), "dropped", "known"),  # 12
        line(interaction(fresh[22], {"rating": 5}, envelope=True), "kept"),  # 13: Batch API envelope (fresh[10] loops: repetition drops it)
        line(interaction(fresh[11], {"rating": 5}, parts=True), "kept"),  # 14: content parts
        line(interaction(fresh[12], {"rating": 5}, finish="length"), "dropped", "truncated"),  # 15
        line(interaction(fresh[13], {"rating": 5}, user_prefix=f"My email is {EMAIL}. "), "kept"),  # 16: PII
        line(interaction(fresh[0], {"rating": 4}), "dropped", "duplicate"),  # 17: same as line 1
        line(interaction(fresh[14], {"rating": 5}, answer=""), "dropped", "empty_response"),  # 18
        LogLine(b"", "blank"),  # 19
        line(interaction(fresh[15], {"rating": 5})[:80], "quarantined", "invalid JSON"),  # 20
        LogLine(interaction(fresh[16], {"rating": 5}).replace("a", "\u00e9", 3).encode("latin-1", errors="replace"), "quarantined", "not UTF-8"),  # 21
        line(json.dumps({"response": json.loads(interaction(fresh[17], None))["response"], "feedback": {"rating": 5}}), "quarantined", "missing request"),  # 22
        line(json.dumps({"request": {"messages": turns(fresh[18])[:-1]}, "feedback": {"rating": 5}}), "quarantined", "missing response"),  # 23
        line(json.dumps({"request": {"messages": [{"role": "user", "content": 42}]}, "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}}), "quarantined", "wrong type: request.messages[0].content must be a string, got int"),  # 24
        line(interaction(fresh[19], {"rating": "5"}), "quarantined", "wrong type: feedback.rating"),  # 25
        line(interaction(fresh[20], {"thumbs": "yes"}), "quarantined", "bad value: feedback.thumbs"),  # 26
        line(json.dumps({"request": "hello", "response": {"choices": []}}), "quarantined", "wrong type: request must be an object"),  # 27
        line(json.dumps({"request": {"messages": turns(fresh[21])[:-1]}, "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]}}]}, "feedback": {"rating": 5}}), "quarantined", "unsupported"),  # 28
    ]


@pytest.fixture(scope="module")
def files(hh, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flywheel")
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in hh[:N_TRAIN]), encoding="utf-8")
    lines = build_log(hh)
    log = root / "log.jsonl"
    log.write_bytes(b"\n".join(x.data for x in lines) + b"\n")
    return {"root": root, "train": train, "log": log, "lines": lines}


def ingest_cli(files: dict[str, Any], out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        "curate", "--from-log", str(files["log"]), "--train", str(files["train"]),
        "--max-quarantined-fraction", "0.5", "--out", str(out), *extra,
    )  # fmt: skip


def read_out(out: Path) -> dict[str, Any]:
    return {
        "curated": [json.loads(x) for x in (out / "curated.jsonl").read_text(encoding="utf-8").splitlines()],
        "ledger": json.loads((out / "ledger.json").read_text(encoding="utf-8")),
        "report": json.loads((out / "report.json").read_text(encoding="utf-8")),
        "quarantine": [json.loads(x) for x in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()],
    }


@pytest.fixture(scope="module")
def first_run(files) -> dict[str, Any]:
    out = files["root"] / "out"
    code, stdout, stderr = ingest_cli(files, out)
    assert code == 0, stderr
    return {**read_out(out), "out": out, "stdout": stdout}


def line_of(source_id: str) -> int:
    return int(source_id.rsplit(":", 1)[1])


def fates(result: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """line -> (fate, reason) from the output files: every line in exactly one place."""
    out: dict[int, tuple[str, str]] = {}
    for kind, rows, reason in (
        ("kept", result["curated"], lambda r: ""),
        ("dropped", result["ledger"]["dropped"], lambda r: r["reason"]),
        ("quarantined", result["quarantine"], lambda r: r["reason"]),
    ):
        for row in rows:
            n = line_of(row["source_id"])
            assert n not in out, f"line {n} is in two places"
            out[n] = (kind, reason(row))
    return out


def assert_balanced(ledger: dict[str, Any], lines: list[LogLine], kept: int) -> None:
    stages = ledger["stages"]
    assert ledger["balanced"] is True
    for stage in stages:
        assert stage["in"] == stage["kept"] + stage["dropped"] + stage["quarantined"], stage
    for before, after in itertools.pairwise(stages):
        assert after["in"] == before["kept"], (before["name"], after["name"])
    assert stages[-1]["kept"] == kept
    dropped, quarantined = sum(s["dropped"] for s in stages), sum(s["quarantined"] for s in stages)
    blank = sum(x.fate == "blank" for x in lines)
    assert len(lines) == kept + dropped + quarantined + blank
    assert len(ledger["dropped"]) == dropped and len(ledger["quarantined"]) == quarantined


# -------------------------------------------------------------------------------- one run


def test_the_premises_hold(hh):
    near = long_training_index(hh)
    train = Conversation(tuple(Message(**m) for m in turns(hh[near])), "t")
    copy = Conversation(tuple(Message(**m) for m in turns(near_copy(hh[near]))), "c")
    value = jaccard(shingle_strings(train, "both", 5), shingle_strings(copy, "both", 5))
    assert 0.8 <= value < 1.0


def test_exactly_the_effective_novel_clean_lines_are_appended(files, first_run):
    lines = files["lines"]
    expected_kept = [n for n, x in enumerate(lines, start=1) if x.fate == "kept"]
    assert [line_of(r["source_id"]) for r in first_run["curated"]] == expected_kept == [1, 2, 3, 13, 14, 16]
    got = fates(first_run)
    for n, x in enumerate(lines, start=1):
        if x.fate == "blank":
            assert n not in got
            continue
        fate, reason = got[n]
        assert fate == x.fate, (n, got[n], x)
        assert x.reason in reason if fate == "quarantined" else reason == x.reason, (n, got[n], x)
    assert_balanced(first_run["ledger"], lines, len(expected_kept))


def test_reasons_name_what_they_matched(files, first_run):
    log, train = str(files["log"]), str(files["train"])
    drops = {line_of(d["source_id"]): d for d in first_run["ledger"]["dropped"]}
    assert drops[11]["detail"] == f"jaccard 1.00 with {train}:6"  # the system prompt is not compared
    assert drops[12]["detail"].startswith("jaccard 0.") and drops[12]["detail"].endswith(f"with {train}:{long_training_index_from(files) + 1}")
    assert drops[17]["detail"] == f"same as {log}:1" and drops[17]["filter"] == "exact_dedup"
    assert drops[4]["detail"] == "rating 3 < 4"
    names = [s["name"] for s in first_run["ledger"]["stages"]]
    assert names[:4] == [
        "read log.jsonl",
        "already ingested",
        "effective (rating >= 4 or thumbs up, not rephrased)",
        f"novel (minhash, both, threshold 0.8, {N_TRAIN} known records)",
    ]
    assert names[4:] == [f"filter {n}" for n in ("exact_dedup", "near_dedup", "min_response_length", "language", "pii", "repetition", "format_check")]


def long_training_index_from(files: dict[str, Any]) -> int:
    with files["train"].open(encoding="utf-8") as fh:
        return long_training_index([json.loads(x) for x in fh])


def test_appended_records_carry_provenance_and_no_pii(files, first_run):
    digest = hashlib.sha256(files["log"].read_bytes()).hexdigest()
    raw_lines = files["log"].read_bytes().split(b"\n")
    for row in first_run["curated"]:
        prov = row["provenance"]
        n = prov["line"]
        assert row["source_id"] == f"{files['log']}:{n}"
        assert prov["log"] == str(files["log"]) and prov["log_sha256"] == digest
        assert prov["line_sha256"] == hashlib.sha256(raw_lines[n - 1]).hexdigest()
        assert prov["feedback"] == json.loads(raw_lines[n - 1].decode("utf-8-sig"))["feedback"]
        assert datetime.fromisoformat(prov["ingested_at"]).tzinfo is not None
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][0]["role"] == "user"
    pii_row = next(r for r in first_run["curated"] if r["provenance"]["line"] == 16)
    assert pii_row["messages"][-2]["content"].startswith("My email is [EMAIL]. ")
    out = first_run["out"]
    for name in ("curated.jsonl", "report.json"):
        assert EMAIL not in (out / name).read_text(encoding="utf-8"), name
    assert EMAIL not in first_run["stdout"]
    parts_row = next(r for r in first_run["curated"] if r["provenance"]["line"] == 14)
    assert all(isinstance(m["content"], str) for m in parts_row["messages"])


def test_report_counts_and_examples(files, first_run):
    report = first_run["report"]
    assert report["kept"] == 6 and report["flywheel"]["appended"] == 6 and report["flywheel"]["curated_before"] == 0
    assert report["flywheel"]["train"] == {"source": str(files["train"]), "records": N_TRAIN, "quarantined": 0}
    assert report["flywheel"]["novelty"]["method"] == "minhash"
    source = report["inputs"][0]
    assert (source["lines"], source["blank_lines"], source["records"], source["quarantined"]) == (28, 1, 18, 9)
    effective = report["stages"][2]["reasons"]
    assert {k: v["count"] for k, v in effective.items()} == {
        "low_rating": 2, "rephrased": 2, "thumbs_down": 1, "truncated": 1, "unrated": 2,
    }  # fmt: skip
    assert effective["low_rating"]["examples"][0]["source_id"] == f"{files['log']}:4"
    read = report["stages"][0]["reasons"]
    assert set(read) == {
        "quarantined: invalid JSON", "quarantined: not UTF-8", "quarantined: missing request",
        "quarantined: missing response", "quarantined: wrong type", "quarantined: bad value",
        "quarantined: unsupported",
    }  # fmt: skip
    assert read["quarantined: wrong type"]["count"] == 3
    assert "known: " in first_run["stdout"] and "6 records appended to " in first_run["stdout"]


# --------------------------------------------------------------------------- runs again


def test_rerun_appends_nothing_and_a_grown_log_only_its_new_lines(hh, files, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(files["log"].read_bytes())
    job = {**files, "log": log}
    out = tmp_path / "out"
    assert ingest_cli(job, out)[0] == 0
    before = (out / "curated.jsonl").read_bytes()
    code, stdout, stderr = ingest_cli(job, out)
    assert code == 0, stderr
    assert (out / "curated.jsonl").read_bytes() == before
    again = read_out(out)
    got = {line_of(d["source_id"]): d["reason"] for d in again["ledger"]["dropped"]}
    assert {n for n, r in got.items() if r == "already_ingested"} == {1, 2, 3, 13, 14, 16}
    assert got[17] == "known"  # its twin (line 1) is in curated.jsonl now
    assert again["report"]["kept"] == 0 and "0 records appended" in stdout
    assert_balanced(again["ledger"], files["lines"], 0)

    with log.open("ab") as fh:  # the log grows: its digest changes, its old lines do not
        fh.write(interaction(hh[N_TRAIN + 30], {"rating": 5}).encode() + b"\n")
    code, _, stderr = ingest_cli(job, out)
    assert code == 0, stderr
    grown = read_out(out)
    assert [line_of(r["source_id"]) for r in grown["curated"]] == [1, 2, 3, 13, 14, 16, 29]
    assert (out / "curated.jsonl").read_bytes().startswith(before)


def test_options_keep_unrated_and_lower_the_rating(files, tmp_path):
    code, _, stderr = ingest_cli(files, tmp_path / "out", "--keep-unrated", "--min-rating", "3")
    assert code == 0, stderr
    kept = [line_of(r["source_id"]) for r in read_out(tmp_path / "out")["curated"]]
    assert kept == [1, 2, 3, 4, 9, 10, 13, 14, 16]


def test_too_many_malformed_lines_fail_by_default(files, tmp_path):
    code, _, stderr = run_cli("curate", "--from-log", str(files["log"]), "--train", str(files["train"]), "--out", str(tmp_path))
    assert code == 2
    assert f"{files['log']}:20: 9 of 27 records are malformed" in stderr
    assert not (tmp_path / "curated.jsonl").exists()


def test_a_corrupt_curated_file_is_refused(files, tmp_path):
    (tmp_path / "curated.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": ', encoding="utf-8")
    code, _, stderr = ingest_cli(files, tmp_path)
    assert code == 2 and "curated.jsonl:2: not a curated record" in stderr


# ------------------------------------------------------------------------------------ API


def test_run_flywheel_api(harness_registries, files, tmp_path):
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    ctx = RunContext(tmp_path, tmp_path)
    steps = build_filters(harness_registries, [ComponentRef(name="exact_dedup"), ComponentRef(name="min_response_length")], ctx, "test")
    job = FlywheelJob(
        files["log"],
        DataFile(files["train"], "sharegpt"),
        tmp_path,
        FlywheelOptions(max_quarantined_fraction=0.5),
        log_source="log.jsonl",
    )
    result = run_flywheel(harness_registries, job, steps, ctx, Examples(), now=now)
    rows = result.outcome.rows
    assert [r["source_id"] for r in rows] == [f"log.jsonl:{n}" for n in (1, 2, 3, 13, 14, 16)]
    assert {r["provenance"]["ingested_at"] for r in rows} == {"2025-01-02T03:04:05+00:00"}
    assert rows[5]["messages"][-2]["content"].startswith(f"My email is {EMAIL}")  # no pii filter in this chain
    assert result.report.balanced and result.curated_before == 0


def test_novelty_falls_back_to_exact_match_without_minhash(monkeypatch):
    pool = [Conversation((Message("user", "How do I bake bread at home?"), Message("assistant", "Mix flour, water, yeast and salt, then bake.")), "train:1")]
    same = Conversation((Message("system", "Be kind."), Message("user", "how do I  bake bread at home?"), Message("assistant", "Mix flour, water, yeast and salt, then bake.")), "log:1")
    edited = Conversation((Message("user", "How do I bake bread at home?"), Message("assistant", "Mix flour, water, yeast and salt, then bake it.")), "log:2")
    hits, method = find_known([same, edited], pool, 0.5, "both")
    assert method == "minhash" and hits[0] == ("train:1", 1.0) and hits[1][0] == "train:1"
    monkeypatch.setitem(sys.modules, "rensa", None)  # MinHash's library cannot be imported
    hits, method = find_known([same, edited], pool, 0.5, "both")
    assert method == "exact" and hits == {0: ("train:1", 1.0)}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"request": {"messages": []}, "response": {}}, "wrong type: request.messages must be a non-empty list"),
        ({"request": {"messages": [{"role": "tool", "content": "x"}]}}, "unsupported: request.messages[0].role 'tool'"),
        ({"request": {"messages": [{"role": "assistant", "content": "x"}]}}, "missing request: the request has no user message"),
        ({"request": {"messages": [{"role": "user", "content": "x"}]}, "response": {"choices": [{}]}}, "missing response: response.choices[0] has no 'message'"),
        ({"request": {"messages": [{"role": "user", "content": "x"}]}, "response": {"choices": [{"message": {"role": "assistant", "content": "y"}}]}, "feedback": {"rating": 9}}, "bad value: feedback.rating must be from 1 to 5, got 9"),
        ({"request": {"messages": [{"role": "user", "content": "x"}]}, "response": {"choices": [{"message": {"role": "assistant", "content": "y"}}]}, "feedback": {"rephrased": "no"}}, "wrong type: feedback.rephrased must be true or false"),
    ],
)
def test_parse_interaction_names_the_problem(line, message):
    from harness.tools.flywheel import LogRecordError

    with pytest.raises(LogRecordError) as info:
        parse_interaction(line, "log:1")
    assert str(info.value).startswith(message)
