"""The HTML and Markdown reporters, rendered from the result document (no browser here; see
tests/test_report_browser.py for the page as Chromium shows it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness_plugins.reporters.html import HtmlReporter, explorer_data, render_html, script_json
from harness_plugins.reporters.markdown import LIMIT, MarkdownReporter, render_markdown

from harness.lib.reportview import compare_runs, headline, item_pairs, threshold
from harness.lib.resultdoc import result_document
from harness.plugin.components import RunContext
from harness.testing import synthetic_run
from harness.types import ItemResult


@pytest.fixture(scope="module")
def doc() -> dict:
    return result_document(synthetic_run(items=200, gates=5))


@pytest.fixture(scope="module")
def html(doc) -> str:
    return render_html(doc)


def test_html_has_one_gate_row_per_gate_and_the_verdict_first(doc, html) -> None:
    rows = re.findall(r'<tr class="gate" data-gate="([^"]+)" data-verdict="(\w+)"', html)
    assert rows == [(d["gate"], d["verdict"]) for d in doc["decisions"]]
    assert html.index('id="verdict"') < html.index('id="gates"')
    head = headline(doc)
    assert head.exit_code == 3 and head.meaning == "a check errored"
    assert f"exit {head.exit_code}</span> a check errored" in html


def test_html_is_self_contained(html) -> None:
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S)  # the page outside its scripts
    assert html.count("<script") == markup.count("<script") + html.count("</script>")
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b[^>]*\b(src|href|data)=", markup)
    assert "default-src 'none'" in html  # and the page's policy forbids it
    assert html.count('class="chart"') == 2  # forest plot and training loss (no history, no curve)
    assert "window.vegaEmbed" in html


def test_item_text_cannot_break_out_of_the_page(doc) -> None:
    hostile = "</script><script>alert(1)</script><!--"
    result = synthetic_run(items=4, gates=1)
    label = next(iter(result.benchmarks))
    base = result.benchmarks[label]["baseline"]
    result.benchmarks[label]["baseline"] = type(base)(
        base.benchmark, base.model, base.metric, (ItemResult(base.items[0].item_id, hostile, hostile, 0.0, prompt=hostile),) + base.items[1:], "k"
    )
    page = render_html(result_document(result))
    assert "alert(1)</script>" not in page
    data = json.loads(re.search(r'<script type="application/json" id="items-data">(.*?)</script>', page, re.S).group(1))
    assert data["rows"][0][3] == hostile  # the text itself is intact once parsed
    assert json.loads(script_json({"x": float("nan")})) == {"x": None}  # JSON.parse has no NaN


def test_explorer_pairs_every_item_with_its_outcome(doc) -> None:
    data = explorer_data(doc)
    pairs = list(item_pairs(doc))
    assert len(data["rows"]) == len(pairs) == 200
    lost = [p for p in pairs if p.outcome == "lost"]
    assert lost and all(p.baseline["score"] == 1 and p.candidate["score"] == 0 for p in lost)
    row = data["rows"][0]
    assert data["benchmarks"][row[0]] == pairs[0].benchmark and row[3] == pairs[0].prompt
    assert row[6] == pairs[0].baseline["raw"]  # raw output differs from the answer: kept

    sampled = {**doc, "benchmarks": {"code": {
        model: {"metric": "pass@1", "score": 0.5, "n": 1, "items": [
            {"item_id": "p1", "prediction": "x", "reference": "1/2 passed", "score": 0.5, "raw": "a", "prompt": "",
             "samples": [{"score": 1.0, "raw": "a"}, {"score": 0.0, "raw": "b"}]},
        ]} for model in ("baseline", "candidate")}}}
    [row] = explorer_data(sampled)["rows"]
    assert row[6] == row[9] == "[sample 1: 1] a\n[sample 2: 0] b"  # every sample with its score


def test_markdown_verdict_gates_and_marker(doc) -> None:
    md = render_markdown(doc)
    lines = md.splitlines()
    assert lines[0] == "<!-- finetune-harness report: synthetic -->"
    assert lines[1].startswith("## 💥 synthetic: exit 3, a check errored")
    gate_lines = [line for line in lines if re.match(r"\| (✅|❌|⚠️|💥) ", line)]
    assert len(gate_lines) == len(doc["decisions"])
    assert "&lt;b&gt;html&lt;/b&gt; & \\| pipes" in md  # cells escape markup and pipes
    assert "Items the candidate lost" in md and "<details>" in md
    assert "Cut to stay under" not in md


def test_markdown_stays_under_the_limit_for_10000_items_and_50_gates() -> None:
    md = render_markdown(result_document(synthetic_run(items=10_000, gates=50)))
    assert len(md) < LIMIT
    assert md.count("| ✅ ") + md.count("| ❌ ") + md.count("| ⚠️ ") + md.count("| 💥 ") == 50


def test_markdown_says_what_it_cut() -> None:
    result = synthetic_run(items=2000, gates=400)
    for d in range(len(result.decisions)):
        old = result.decisions[d]
        result.decisions[d] = type(old)(old.gate, old.benchmark, old.rule, old.verdict, "a long reason " * 20, old.blocking, old.comparison)
    md = render_markdown(result_document(result))
    assert len(md) <= LIMIT
    assert "more lines cut to stay under 65,000 characters" in md
    assert md.rstrip().endswith("The full report is report.html.*")
    assert "gates:" in md.splitlines()[-1] and "provenance: left out" in md.splitlines()[-1]


def test_markdown_reporter_appends_to_the_job_summary(tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    reporter = MarkdownReporter(MarkdownReporter.Config(), RunContext(tmp_path, tmp_path / "w"))
    [path] = reporter.report(synthetic_run(items=20, gates=2), tmp_path / "out")
    assert summary.read_text() == "earlier step\n" + path.read_text()


def test_html_reporter_writes_what_render_returns(tmp_path: Path, doc) -> None:
    reporter = HtmlReporter(HtmlReporter.Config(), RunContext(tmp_path, tmp_path / "w"))
    [path] = reporter.report(synthetic_run(items=200, gates=5), tmp_path)
    assert path.name == "report.html" and path.read_text(encoding="utf-8") == reporter.render(doc)["report.html"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("non_inferior(margin=0.02)", -0.02), ("superior()", 0.0), ("superior(margin=0.05)", 0.05),
     ("no_regression(margin=0.1)", -0.1), ("non_inferior()", -0.02), ("no_findings(fail_on=high)", None)],
)
def test_threshold_of_each_rule(rule, expected) -> None:
    assert threshold(rule) == expected


def test_compare_runs_finds_the_items_that_flipped() -> None:
    a, b = result_document(synthetic_run(items=60, gates=2, seed=1)), result_document(synthetic_run(items=60, gates=2, seed=2))
    diff = compare_runs(a, b)
    expected = {
        (label, model, ia["item_id"])
        for label, per_model in a["benchmarks"].items()
        for model, res in per_model.items()
        for ia, ib in zip(res["items"], b["benchmarks"][label][model]["items"])
        if ia["score"] != ib["score"]
    }
    assert {(f.benchmark, f.model, f.item_id) for f in diff.flips} == expected and expected
    assert [g for g, _, _ in diff.decisions] == ["bench_00", "bench_01"]


def _parity_run():
    from harness.types import CheckResult, Finding, ParityResult

    result = synthetic_run(items=20, gates=1)
    window = [{"id": 1, "token": "<|im_start|>"}, {"id": 9690, "token": "system"}]
    template = Finding("template", "system_prompt", "high", "production adds a system prompt", 3, 10,
                       {"example_request": "req-7", "diff": "--- offline\n+++ production\n+You are helpful.",
                        "first_divergence": 1, "offline_tokens": window, "production_tokens": window[::-1]})
    sampling = Finding("sampling", "sampling_params", "medium", "temperature differs", 10, 10, {"diff": 0.12})
    divergence = {"position": 4, "production_token": {"id": 5, "token": "Ġyes", "server_logprob": -0.1, "offline_logprob": -2.3},
                  "offline_top_token": {"id": 6, "token": "Ġno", "offline_logprob": -0.2}}
    replay = CheckResult("replay", "replay", "ok", metrics={"per_request": [
        {"request": "req-1", "agree": True}, {"request": "req-2", "agree": False, "first_divergence": divergence, "attribution": "system_prompt"},
    ]})
    result.parity = ParityResult(10, [CheckResult("template", "template", "findings", (template,)),
                                      CheckResult("sampling", "sampling", "findings", (sampling,)), replay,
                                      CheckResult("traffic", "traffic_shift", "error", error="endpoint down")], notes=["10 requests read"])
    return result_document(result)


def test_parity_findings_show_their_evidence() -> None:
    doc = _parity_run()
    page = render_html(doc)
    section = page[page.index('id="parity-section"'):page.index('id="provenance-section"')]
    assert "production adds a system prompt" in section and "(request req-7)" in section
    assert "+You are helpful." in section  # the template diff
    assert "First divergence at token 1" in section and "9690:system" in section
    assert "1 of 2 replayed requests diverge" in section and "Ġyes" in section and "system_prompt" in section
    assert "endpoint down" in section and "<pre>0.12</pre>" not in section  # a numeric diff is no text diff
    md = render_markdown(doc)
    assert "parity on 10 requests" in md and "high | 3/10 | system_prompt: production adds a system prompt" in md
