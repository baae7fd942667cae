"""End to end on the real embedded SmolLM2 and real data: curate -> LoRA -> evaluate -> gate ->
report through the CLI, then the same suite again entirely from the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
PROMPT = "Classify the intent of this customer message. Answer with the intent label only.\n\nMessage: {instruction}"


def _run(suite: Path, tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(suite), "--reports", str(tmp / "reports"), "--store", str(tmp / "store")],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=1800,  # generous: the first run trains and evaluates on a shared 2-core machine
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    newest = max((tmp / "reports").iterdir(), key=lambda p: p.stat().st_mtime)
    return proc, json.loads((newest / "result.json").read_text())


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, harness_embedded_model_dir: Path):
    tmp = tmp_path_factory.mktemp("e2e")
    extra = tmp / "extra.jsonl"
    extra.write_text(
        '{"messages": [{"role": "user", "content": "' + PROMPT.format(instruction="where is my parcel").replace("\n", "\\n") + '"}, {"role": "assistant", "content": "track_order"}]}\n'
        '{"messages": [{"role": "user", "content": "broken line"\n'
    )
    suite = tmp / "suite.yaml"
    suite.write_text(
        json.dumps(
            {
                "name": "e2e",
                "seed": 3,
                "model": "smollm2-135m-instruct",
                "data": [
                    {"path": CSV, "format": "csv", "split": "train", "sample": 24, "user": PROMPT, "assistant": "{intent}"},
                    {"path": str(extra), "format": "messages"},
                ],
                "curate": {"filters": ["exact_dedup", {"name": "min_response_length", "min_chars": 3}], "max_quarantined_fraction": 0.1},
                "train": {"name": "lora", "max_steps": 3, "batch_size": 8, "max_length": 96, "eval_every": 2, "learning_rate": 2e-3},
                "evaluate": {
                    "support_intent": {"name": "support_intent", "prompt": PROMPT, "sample": 12},
                    "mmlu": {"name": "mmlu", "subjects": ["anatomy", "astronomy", "virology"], "per_subject": 2},
                },
                "gates": {"support_intent": "superior()", "mmlu": {"rule": "non_inferior(margin=0.02)", "blocking": False}},
            }
        )
    )
    first = _run(suite, tmp)
    second = _run(suite, tmp)
    return first, second


def _report_dir(result: dict) -> Path:
    return Path(result["suite"]["path"]).parent / "reports" / result["run_id"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, timeout=300)


def test_first_run_trains_evaluates_gates_and_reports(e2e) -> None:
    (proc, result), _ = e2e
    assert result["schema"] == "finetune-harness/result/v2"
    assert result["exit_code"] == proc.returncode
    ledger = result["ledger"]
    assert ledger["balanced"]
    assert [q["source_id"] for q in ledger["quarantined"]] == [ledger["quarantined"][0]["source_id"]]
    assert ledger["quarantined"][0]["source_id"].endswith("extra.jsonl:2")
    assert "invalid JSON" in ledger["quarantined"][0]["reason"]
    assert result["train"]["steps"] == 3 and not result["train"]["from_cache"]
    assert [(c["step"], c["final"]) for c in result["checkpoints"]] == [(2, False), (3, True)]
    for label, n in (("support_intent", 12), ("mmlu", 6)):
        per_model = result["benchmarks"][label]
        assert set(per_model) == {"baseline", "candidate"}
        for res in per_model.values():
            assert res["n"] == n and len(res["items"]) == n and not res["from_cache"]
            assert all(item["score"] in (0.0, 1.0) for item in res["items"])
        base_ids = [i["item_id"] for i in per_model["baseline"]["items"]]
        assert base_ids == [i["item_id"] for i in per_model["candidate"]["items"]]
    decisions = {d["gate"]: d for d in result["decisions"]}
    assert set(decisions) == {"support_intent", "mmlu"}
    for d in decisions.values():
        assert d["verdict"] in ("pass", "fail", "inconclusive")
        cmp = d["comparison"]
        assert cmp["test"] == "mcnemar" and cmp["ci_low"] <= cmp["ci_high"]
    assert decisions["mmlu"]["blocking"] is False
    out = proc.stdout
    for text in ("Curation ledger", "quarantined", "training", "Benchmarks", "Gates", "support_intent"):
        assert text in out
    junit = ET.parse(Path(result["suite"]["path"]).parent / "reports" / result["run_id"] / "junit.xml").getroot()
    assert junit.get("tests") == "2"
    assert {c.get("name") for c in junit.iter("testcase")} == {"support_intent", "mmlu"}


def test_second_run_comes_from_the_store(e2e) -> None:
    (_, first), (proc, second) = e2e
    assert second["train"]["from_cache"] is True
    assert second["train"]["path"] == first["train"]["path"]
    assert second["checkpoints"] == first["checkpoints"]  # replayed from the cached training
    for label, per_model in second["benchmarks"].items():
        for model, res in per_model.items():
            assert res["from_cache"], (label, model)
            assert res["items"] == first["benchmarks"][label][model]["items"]
    assert [d["verdict"] for d in second["decisions"]] == [d["verdict"] for d in first["decisions"]]
    assert proc.stdout.count("items (from cache)") == 4
    assert "train from cache:" in proc.stdout and "Training (from cache)" in proc.stdout


def test_reports_show_raw_answers_and_render_again_from_the_store(e2e, tmp_path: Path) -> None:
    (_, first), _ = e2e
    folder = _report_dir(first)
    assert {"report.html", "report.md", "result.json", "junit.xml"} <= {p.name for p in folder.iterdir()}
    items = first["benchmarks"]["support_intent"]["candidate"]["items"]
    assert all(i["raw"] and i["raw"].strip() == i["prediction"] for i in items)  # what the model said
    assert all(i["prompt"].startswith("Classify the intent") for i in items)
    md = (folder / "report.md").read_text()
    assert len(md) < 65_000 and md.startswith("<!-- finetune-harness report: e2e -->")
    store = str(Path(first["suite"]["path"]).parent / "store")
    proc = _cli("report", first["run_id"], "--store", store, "--out", str(tmp_path), "--format", "html", "--format", "md")
    assert proc.returncode == 0, proc.stderr
    for name in ("report.html", "report.md"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes()


def test_report_opens_in_chromium_with_the_network_off(e2e, tmp_path: Path) -> None:
    from harness.lib.browser import open_report

    (_, first), _ = e2e

    def inspect(page) -> dict:
        page.select_option("#f-outcome", "")
        page.locator("#items .row").first.click()
        return {"gates": page.locator("#gates tbody tr").count(), "detail": page.inner_text("#item-detail")}

    shots = os.environ.get("HARNESS_SCREENSHOTS")
    shot = Path(shots) / "e2e-report.png" if shots else tmp_path / "report.png"
    report = open_report(_report_dir(first) / "report.html", inspect, screenshot=shot)
    assert report.console_errors == [] and report.failed_requests == [] and report.outside_requests == []
    assert report.values["gates"] == len(first["decisions"]) == 2
    item = first["benchmarks"]["support_intent"]["baseline"]["items"][0]
    assert item["item_id"] in report.values["detail"] and "Classify the intent" in report.values["detail"]
    assert shot.stat().st_size > 10_000


def test_compare_with_another_seed_lists_the_flipped_items(e2e) -> None:
    (_, first), (_, second) = e2e
    suite = Path(first["suite"]["path"])
    other = suite.with_name("other-seed.yaml")
    other.write_text(json.dumps({**json.loads(suite.read_text()), "seed": 4}))
    third = _run(other, suite.parent)[1]
    store = str(suite.parent / "store")
    listed = _cli("runs", "--store", store)
    assert listed.returncode == 0 and all(r["run_id"] in listed.stdout for r in (first, second, third))
    expected = sorted(
        (label, model, a["item_id"])
        for label, per_model in first["benchmarks"].items()
        for model, res in per_model.items()
        for a, b in zip(res["items"], third["benchmarks"][label][model]["items"])
        if a["score"] != b["score"]
    )
    proc = _cli("compare", first["run_id"], third["run_id"], "--store", store, "--limit", "0")
    assert proc.returncode == 0, proc.stderr
    assert f"Items that flipped: {len(expected)}" in proc.stdout
    for _label, _model, item_id in expected:
        assert item_id in proc.stdout
    same = _cli("compare", first["run_id"], second["run_id"], "--store", store)
    assert "Items that flipped: 0" in same.stdout  # the second run came from the store
