"""``harness curate DATA``: a data file curated with the default filter chain, every line
accounted for, and a report whose examples carry no PII.

The corpus is real records (HH-RLHF ShareGPT, Self-Instruct Alpaca, FastChat's dummy
conversations, Bitext rows as OpenAI messages) written as one JSONL file, with planted defects
at known lines: malformed lines of every kind, a non-UTF-8 line, a UTF-8 BOM at the start, blank
lines, empty answers, PII, an answer that repeats one line, a duplicate.  The default chain runs
once for the module (``format_check`` loads SmolLM2's tokenizer once per process).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.cli import main
from harness.plugin.components import Filter, FilterResult, Reader
from harness.stages.curate import UnbalancedLedgerError, select
from harness.stages.curate_report import EXAMPLES_PER_REASON, EXCERPT_CHARS
from harness.tools.curate_file import parse_filters
from harness.lib.data import data_dir
from harness.errors import EXIT_CHECK_ERRORED, PluginError
from harness.lib.refs import DataSource
from harness.types import Conversation, Message, Quarantined

HH = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"
SELF_INSTRUCT = "self_instruct/seed_tasks_alpaca.jsonl"
FASTCHAT = "fastchat_dummy_conversation/dummy_conversation.jsonl"
BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
PER_SOURCE = 20

EMAIL, CARD, PHONE, SSN = "anna.smith@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "123-45-6789"
JSON_EMAIL, LATIN1_EMAIL = "jo.bloggs@example.org", "sam.jones@example.net"
PLANTED_PII = (EMAIL, CARD, PHONE, SSN, JSON_EMAIL, LATIN1_EMAIL)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``harness`` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def head(relative: str, n: int) -> list[str]:
    with (data_dir() / relative).open(encoding="utf-8") as fh:
        return [line.rstrip("\n") for line, _ in zip(fh, range(n))]


def bitext_rows(n: int) -> list[dict[str, str]]:
    with (data_dir() / BITEXT).open(encoding="utf-8-sig", newline="") as fh:
        return [row for row, _ in zip(csv.DictReader(fh), range(n))]


def messages(user: str, assistant: Any) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})


@dataclass(frozen=True)
class Line:
    """One line of the corpus and what must become of it."""

    data: bytes
    fate: str  # kept | dropped | quarantined | blank | any (a real record: kept or dropped)
    reason: str = ""  # quarantine reason (substring) or "filter:reason"


def build_corpus() -> list[Line]:
    hh, si, fc = head(HH, PER_SOURCE), head(SELF_INSTRUCT, PER_SOURCE), head(FASTCHAT, PER_SOURCE)
    bt = [messages(r["instruction"], r["response"]) for r in bitext_rows(PER_SOURCE + 3)]

    def real(text: str) -> Line:
        return Line(text.encode(), "any")

    alpaca = json.loads(si[3])
    repeated_answer = "\n".join([f"Please call our office, your case number is {SSN}."] * 6)
    hh_repeat = json.loads(hh[5])
    hh_repeat["conversations"][-1]["value"] = repeated_answer
    latin1 = json.dumps({"instruction": f"Café order for {LATIN1_EMAIL}", "input": "", "output": "Done."}, ensure_ascii=False)
    lines = [Line(b"\xef\xbb\xbf" + hh[0].encode(), "any")]  # 1: BOM, then a real record
    lines += [real(t) for t in hh[1:]]
    lines += [
        Line(b"", "blank"),
        Line(json.dumps({"instruction": f"Mail {JSON_EMAIL} the invoice", "output": "Sent."})[:-12].encode(), "quarantined", "invalid JSON"),
        Line(messages("How many?", 42).encode(), "quarantined", "messages[1].content must be a string, got int"),
        Line(latin1.encode("latin-1"), "quarantined", "not UTF-8"),
    ]
    lines += [real(t) for t in si]
    lines += [
        Line(json.dumps({**alpaca, "instruction": f"  {alpaca['instruction'].upper()}  "}).encode(), "dropped", "exact_dedup:duplicate"),
        Line(json.dumps({"instruction": "List three colours", "input": "", "output": ["red", "blue"]}).encode(), "quarantined", "output must be a string, got list"),
        Line(json.dumps({"instruction": "No answer here"}).encode(), "quarantined", "alpaca record has no 'output' field"),
        Line(json.dumps({"conversations": [{"from": "human"}, {"from": "gpt", "value": "Hi"}]}).encode(), "quarantined", "conversations[0] needs 'from' and 'value'"),
        Line(json.dumps({"messages": [{"content": "hi"}, {"role": "assistant", "content": "Hello"}]}).encode(), "quarantined", "messages[0].role must be a string, got null"),
        Line(b"[1, 2, 3]", "quarantined", "expected a JSON object, got list"),
        Line(json.dumps({"prompt": "x", "completion": "y"}).encode(), "quarantined", "unrecognised record"),
        Line(b"  \t ", "blank"),
    ]
    lines += [real(t) for t in fc]
    lines += [
        Line(messages(f"Call me on {PHONE}. {json.loads(bt[0])['messages'][0]['content']}", "").encode(), "dropped", "min_response_length:empty_response"),
        Line(json.dumps({"conversations": [{"from": "human", "value": "Are you there?"}, {"from": "gpt", "value": "   "}]}).encode(), "dropped", "min_response_length:empty_response"),
        Line(json.dumps(hh_repeat).encode(), "dropped", "repetition:repeated_lines"),
        Line(messages(f"My email is {EMAIL} and my card is {CARD}. " + json.loads(bt[1])["messages"][0]["content"], json.loads(bt[1])["messages"][1]["content"]).encode(), "kept", "redacted"),
    ]
    lines += [real(t) for t in bt[2:]]
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Line]]:
    lines = build_corpus()
    path = tmp_path_factory.mktemp("corpus") / "planted.jsonl"
    path.write_bytes(b"\n".join(line.data for line in lines) + b"\n")
    return path, lines


@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory) -> dict[str, Any]:
    path, _ = corpus
    out = tmp_path_factory.mktemp("out")
    code, stdout, stderr = run_cli("curate", str(path), "--max-quarantined-fraction", "0.2", "--out", str(out))
    assert code == 0, stderr
    return {
        "out": out,
        "stdout": stdout,
        "ledger": json.loads((out / "ledger.json").read_text(encoding="utf-8")),
        "report": json.loads((out / "report.json").read_text(encoding="utf-8")),
        "curated": [json.loads(x) for x in (out / "curated.jsonl").read_text(encoding="utf-8").splitlines()],
        "quarantine": [json.loads(x) for x in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()],
    }


def assert_balanced(ledger: dict[str, Any], n_lines: int, blank: int, kept: int) -> None:
    """Every step balances, each step takes what the previous kept, and the whole adds up."""
    stages = ledger["stages"]
    assert ledger["balanced"] is True
    for stage in stages:
        assert stage["in"] == stage["kept"] + stage["dropped"] + stage["quarantined"], stage
        reasons = stage["reasons"]
        assert sum(v for k, v in reasons.items() if k.startswith("quarantined: ")) == stage["quarantined"], stage
        drops = sum(v for k, v in reasons.items() if not k.startswith(("quarantined: ", "redacted: ")))
        assert drops == stage["dropped"], stage
    for before, after in itertools.pairwise(stages):
        assert after["in"] == before["kept"], (before["name"], after["name"])
    assert stages[-1]["kept"] == kept
    dropped, quarantined = sum(s["dropped"] for s in stages), sum(s["quarantined"] for s in stages)
    assert stages[0]["in"] == kept + dropped + quarantined
    assert n_lines == kept + dropped + quarantined + blank  # nothing disappears
    assert len(ledger["dropped"]) == dropped and len(ledger["quarantined"]) == quarantined


# ----------------------------------------------------------------------------- the corpus


def test_every_line_is_accounted_for(corpus, curated):
    path, lines = corpus
    blank = sum(line.fate == "blank" for line in lines)
    assert_balanced(curated["ledger"], len(lines), blank, len(curated["curated"]))
    assert [s["name"] for s in curated["ledger"]["stages"]] == [
        "read planted.jsonl",
        *(f"filter {n}" for n in ("exact_dedup", "near_dedup", "min_response_length", "language", "pii", "repetition", "format_check")),
    ]
    kept = {r["source_id"] for r in curated["curated"]}
    dropped = {d["source_id"] for d in curated["ledger"]["dropped"]}
    quarantined = {q["source_id"] for q in curated["quarantine"]}
    non_blank = {f"{path}:{n}" for n, line in enumerate(lines, start=1) if line.fate != "blank"}
    assert kept | dropped | quarantined == non_blank
    assert len(kept) + len(dropped) + len(quarantined) == len(non_blank)  # disjoint
    source = curated["report"]["inputs"][0]
    assert (source["lines"], source["blank_lines"]) == (len(lines), blank)
    assert source["records"] + source["quarantined"] + source["blank_lines"] == source["lines"]
    assert f"planted.jsonl: {len(lines)} lines = {source['records']} records + {source['quarantined']} quarantined + {blank} blank" in curated["stdout"]


def test_each_planted_defect_gets_its_reason(corpus, curated):
    path, lines = corpus
    quarantine = {q["source_id"]: q for q in curated["quarantine"]}
    drops = {d["source_id"]: d for d in curated["ledger"]["dropped"]}
    kept = {r["source_id"]: r for r in curated["curated"]}
    planted = [(n, line) for n, line in enumerate(lines, start=1) if line.fate not in ("any", "blank")]
    assert len([1 for _, line in planted if line.fate == "quarantined"]) == len(quarantine) == 9
    for n, line in planted:
        sid = f"{path}:{n}"
        if line.fate == "quarantined":
            assert line.reason in quarantine[sid]["reason"], (sid, quarantine[sid]["reason"])
            assert quarantine[sid]["raw"] == line.data.decode("utf-8", errors="replace")  # the raw text
        elif line.fate == "dropped":
            flt, reason = line.reason.split(":")
            assert (drops[sid]["filter"], drops[sid]["reason"]) == (flt, reason), sid
        else:
            assert sid in kept, sid
    duplicate = next(n for n, line in enumerate(lines, start=1) if line.reason == "exact_dedup:duplicate")
    original = PER_SOURCE + 4 + 1 + 3  # self-instruct record 3: after hh (20 lines) and four planted lines
    assert drops[f"{path}:{duplicate}"]["detail"] == f"same as {path}:{original}"
    # the BOM line is read as the record it holds
    assert f"{path}:1" not in quarantine
    first = next(iter(curated["curated"]))
    assert first["source_id"] == f"{path}:1" and not first["messages"][0]["content"].startswith("\ufeff")


def test_pii_is_redacted_in_the_curated_set_and_never_in_the_report(corpus, curated):
    path, lines = corpus
    redacted_line = next(n for n, line in enumerate(lines, start=1) if line.reason == "redacted")
    record = next(r for r in curated["curated"] if r["source_id"] == f"{path}:{redacted_line}")
    assert record["messages"][0]["content"].startswith("My email is [EMAIL] and my card is [CREDIT_CARD]. ")
    report_text = (curated["out"] / "report.json").read_text(encoding="utf-8")
    curated_text = (curated["out"] / "curated.jsonl").read_text(encoding="utf-8")
    for value in PLANTED_PII:
        assert value not in report_text, value
        assert value not in curated_text, value
        assert value not in curated["stdout"], value
    # the quarantine file keeps raw text (PII included): it is the restricted copy
    assert JSON_EMAIL in (curated["out"] / "quarantine.jsonl").read_text(encoding="utf-8")
    # ...and the examples that would have shown the values show placeholders instead
    examples = [
        e
        for stage in curated["report"]["stages"]
        for entry in stage["reasons"].values()
        for e in entry["examples"]
    ]
    shown = " ".join(e["excerpt"] for e in examples)
    for placeholder in ("[EMAIL]", "[PHONE]", "[NATIONAL_ID]", "[CREDIT_CARD]"):
        assert placeholder in shown, placeholder


def test_report_has_counts_and_short_examples_per_reason(corpus, curated):
    path, _ = corpus
    report = curated["report"]
    assert report["schema"] == "finetune-harness/curate-report/v1" and report["balanced"] is True
    assert report["kept"] == len(curated["curated"])
    for stage, ledger_stage in zip(report["stages"], curated["ledger"]["stages"]):
        assert {k: v["count"] for k, v in stage["reasons"].items()} == ledger_stage["reasons"]
        for reason, entry in stage["reasons"].items():
            assert 1 <= len(entry["examples"]) <= min(EXAMPLES_PER_REASON, entry["count"]), reason
            for example in entry["examples"]:
                assert example["source_id"].startswith(f"{path}:")
                assert len(example["excerpt"]) <= EXCERPT_CHARS
    read = report["stages"][0]["reasons"]
    assert read["quarantined: invalid JSON"]["examples"][0]["excerpt"].startswith('{"instruction": "Mail [EMAIL] the invoice"')
    pii = report["stages"][5]["reasons"]  # read, exact_dedup, near_dedup, min_response_length, language, pii
    assert {"redacted: email", "redacted: credit_card", "redacted: national_id"} <= set(pii)
    stdout = curated["stdout"]
    assert "read planted.jsonl: in " in stdout and "= kept " in stdout
    assert "    repeated_lines: " in stdout and "[NATIONAL_ID]" in stdout


def test_too_many_malformed_lines_fail_by_default(corpus, tmp_path):
    path, lines = corpus
    code, _, stderr = run_cli("curate", str(path), "--filters", "exact_dedup", "--out", str(tmp_path))
    first_bad = next(n for n, line in enumerate(lines, start=1) if line.fate == "quarantined")
    assert code == 2
    assert stderr.startswith(f"harness: error: {path}:{first_bad}: 9 of ")
    assert "--max-quarantined-fraction 0.05" in stderr


# --------------------------------------------------------------------- options and errors


def test_filters_inline_and_from_a_file(corpus, tmp_path):
    path, _ = corpus
    code, _, stderr = run_cli(
        "curate", str(path), "--max-quarantined-fraction", "1", "--filters", "[exact_dedup, {name: min_response_length, min_chars: 3}]", "--out", str(tmp_path / "a")
    )
    assert code == 0, stderr
    stages = json.loads((tmp_path / "a" / "ledger.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["read planted.jsonl", "filter exact_dedup", "filter min_response_length"]
    chain = tmp_path / "chain.yaml"
    chain.write_text("filters:\n  - exact_dedup\n  - name: pii\n    action: drop\n")
    code, _, stderr = run_cli("curate", str(path), "--max-quarantined-fraction", "1", "--filters", str(chain), "--out", str(tmp_path / "b"))
    assert code == 0, stderr
    ledger = json.loads((tmp_path / "b" / "ledger.json").read_text())
    assert ledger["stages"][2]["name"] == "filter pii" and ledger["stages"][2]["reasons"]["pii"] >= 3
    assert parse_filters("exact_dedup, pii")[0][1].name == "pii"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["curate"], "give a suite (.yaml), a data file, or --from-log"),
        (["curate", "{data}", "--filters", "[exact_dedup, nope]"], "--filters[1]: "),
        (["curate", "{data}", "--filters", "[{name: pii, action: shred}]"], "--filters[0]: pii.action"),
        (["curate", "{data}", "--train", "t.jsonl"], "--train is only for --from-log"),
        (["curate", "{suite}", "--filters", "exact_dedup"], "--filters is for a data file"),
        (["curate", "--from-log", "{data}"], "--from-log needs --train"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, corpus, tmp_path):
    path, _ = corpus
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodel: smollm2-135m-instruct\n")
    argv = [{"{data}": str(path), "{suite}": str(suite)}.get(a, a) for a in argv]
    code, _, stderr = run_cli(*argv, "--out", str(tmp_path / "out"))
    assert code == 2, stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_csv_needs_templates_and_reads_with_them(tmp_path):
    rows = bitext_rows(12)
    data = tmp_path / "bitext.csv"
    with data.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, _, stderr = run_cli("curate", str(data), "--filters", "exact_dedup", "--out", str(tmp_path / "o"))
    assert code == 2 and "--user and --assistant" in stderr
    code, _, stderr = run_cli(
        "curate", str(data), "--user", "{instruction}", "--assistant", "{response}", "--filters", "exact_dedup", "--out", str(tmp_path / "o")
    )
    assert code == 0, stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["inputs"][0]["records"] == 12 and report["inputs"][0]["lines"] is None


def test_suite_path_writes_the_same_files(corpus, tmp_path):
    path, _ = corpus
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: s\nmodel: smollm2-135m-instruct\n"
        f"data:\n  - path: {json.dumps(str(path))}\n    format: auto\n"
        "curate:\n  max_quarantined_fraction: 0.2\n  filters: [exact_dedup, min_response_length]\n"
    )
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("curate", str(suite), "--out", str(out))
    assert code == 0, stderr
    assert {p.name for p in out.iterdir()} >= {"curated.jsonl", "quarantine.jsonl", "ledger.json", "report.json"}
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]][:2] == ["read planted.jsonl", "select planted.jsonl (split=all, sample=None)"]
    assert "filter exact_dedup: in " in stdout and "    duplicate: " in stdout


# --------------------------------------------------------------- steps that lose records


class SkipsLines(Reader):
    """A reader that silently skips every other line (RELIABILITY.md's anti-pattern)."""

    name = "skips_lines"
    line_oriented = True

    def read(self, path: Path, source: str):
        for n, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if text.strip() and n % 2:
                yield Conversation((Message("user", "q"), Message("assistant", text[:50] or "a")), f"{source}:{n}")


class RepeatsIds(Reader):
    name = "repeats_ids"

    def read(self, path: Path, source: str):
        yield Conversation((Message("user", "q"), Message("assistant", "a")), f"{source}:1")
        yield Quarantined(f"{source}:1", "bad", "raw")


class LosesOne(Filter):
    name = "loses_one"

    def apply(self, records):
        return FilterResult(list(records[1:]), [])


class Misbehaving:
    @harness.hookimpl
    def harness_register_readers(self, registrar):
        registrar.add(SkipsLines)
        registrar.add(RepeatsIds)

    @harness.hookimpl
    def harness_register_filters(self, registrar):
        registrar.add(LosesOne)


@pytest.fixture
def misbehaving(monkeypatch):
    import harness.plugin.manager

    real = harness.plugin.manager.get_plugin_manager
    monkeypatch.setattr(
        harness.plugin.manager, "get_plugin_manager", lambda **kw: real(load_entrypoints=False, plugins=[("misbehaving", Misbehaving())])
    )


@pytest.mark.parametrize(
    ("fmt", "filters", "message"),
    [
        ("skips_lines", "exact_dedup", "step 'read planted.jsonl': reader 'skips_lines' from misbehaving (given in-process) accounts for"),
        ("repeats_ids", "exact_dedup", "returned source id"),
        ("auto", "[exact_dedup, loses_one]", "filter 'loses_one' from misbehaving (given in-process) does not account for its input"),
    ],
)
def test_a_step_that_loses_records_fails_with_exit_3(fmt, filters, message, misbehaving, corpus, tmp_path):
    path, _ = corpus
    code, _, stderr = run_cli(
        "curate", str(path), "--format", fmt, "--filters", filters, "--max-quarantined-fraction", "1", "--out", str(tmp_path)
    )
    assert code == EXIT_CHECK_ERRORED, stderr
    assert message in stderr
    assert not (tmp_path / "curated.jsonl").exists()


def test_selection_that_invents_records_is_an_unbalanced_ledger(monkeypatch):
    import harness.stages.curate

    records = [Conversation((Message("user", f"q{i}"), Message("assistant", "a")), f"f:{i}") for i in range(5)]
    invented = Conversation((Message("user", "x"), Message("assistant", "y")), "elsewhere:1")
    monkeypatch.setattr(harness.stages.curate, "seeded_sample", lambda items, n, seed, key: [invented, *items[: n - 1]])
    with pytest.raises(UnbalancedLedgerError, match=r"step 'select f.jsonl \(split=all, sample=3\)'") as info:
        select(DataSource(path="f.jsonl", sample=3), records)
    assert isinstance(info.value, PluginError) and info.value.exit_code == EXIT_CHECK_ERRORED
