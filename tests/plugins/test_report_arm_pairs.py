"""Every pair of arms and the prompting rule in the reports: the run's comparison (``arm_pairs``) as
``result.json``, ``report.md`` and ``report.html`` show it, on constructed results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness_plugins.reporters.html import render_html
from harness_plugins.reporters.markdown import render_markdown

from harness.lib.resultdoc import result_document
from harness.stages.pairs import compare_run_arms, comparison_document
from harness.testing import synthetic_run
from harness.types import BenchmarkResult, ItemResult, RunResult

N = 100
ARMS = {  # result label -> the arm entry the runner records (harness.run.arms.describe_arms)
    "baseline": {"name": "base", "backend": "hf", "kind": "prompting"},
    "few8": {"name": "few8", "backend": "hf", "kind": "prompting"},
    "near8": {"name": "near8", "backend": "hf", "kind": "prompting"},
    "candidate": {"name": "trained", "backend": "hf", "kind": "lora"},
}


def _result(label: str, correct: int, offset: int) -> BenchmarkResult:
    right = {(offset + i) % N for i in range(correct)}
    items = tuple(ItemResult(f"i{i:03d}", "x", "y", float(i in right)) for i in range(N))
    return BenchmarkResult("support_intent", label, "exact_match", items, f"key-{label}")


def _run(scores: dict[str, int]) -> RunResult:
    """A finished run whose ``intent`` benchmark scored every arm (``correct`` items of 100 each)."""
    result = synthetic_run(items=20, gates=1)
    result.arms = dict(ARMS)
    result.benchmarks["intent"] = {label: _result(label, c, 7 * i) for i, (label, c) in enumerate(scores.items())}
    comparison = compare_run_arms(result, {"few8", "near8"}, alpha=0.05, seed=0)
    assert comparison is not None
    result.arm_pairs = comparison_document(comparison)
    return result


CLOSE = {"baseline": 30, "few8": 63, "near8": 60, "candidate": 64}
"""LoRA one point above the best prompting arm: within the chapter's 2 points."""
FAR = {"baseline": 30, "few8": 50, "near8": 55, "candidate": 85}
"""LoRA 30 points above: keep training."""


def test_a_run_compares_every_pair_prompting_arms_first_only_where_more_than_two_arms_ran() -> None:
    result = _run(CLOSE)
    doc = result_document(result)
    section = json.loads(json.dumps(doc))["arm_pairs"]
    assert [d["benchmark"] for d in section["decisions"]] == ["intent"]  # the synthetic two-arm benchmark is not
    pairs = [(p["first"], p["second"]) for p in section["pairs"]]
    assert pairs == [("baseline", "few8"), ("baseline", "near8"), ("baseline", "candidate"),
                     ("few8", "near8"), ("few8", "candidate"), ("near8", "candidate")]  # fmt: skip
    assert section["pairs"][2]["comparison"]["diff"] == pytest.approx(0.34)
    assert section["decisions"][0]["best_prompting"] == "few8" and section["consider_prompting"] is True
    plain = synthetic_run(items=20, gates=1)
    assert compare_run_arms(plain, set(), alpha=0.05, seed=0) is None  # baseline and candidate only: the gates say it


def test_a_prompt_variant_alone_is_enough_to_compare() -> None:
    result = synthetic_run(items=20, gates=1)
    result.arms = {"baseline": ARMS["baseline"], "few8": ARMS["few8"]}
    result.benchmarks = {"intent": {"baseline": _result("baseline", 30, 0), "few8": _result("few8", 60, 3)}}
    comparison = compare_run_arms(result, {"few8"}, alpha=0.05, seed=0)
    assert comparison is not None and [(p.first, p.second) for p in comparison.pairs] == [("baseline", "few8")]
    assert comparison.decisions[0].verdict == "not applicable" and "no trained arm" in comparison.decisions[0].reason


def _rule_line(markdown: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith("**") and "best trained arm" in line)


def test_markdown_shows_the_pairs_and_the_rule_line_which_flips_with_the_scores() -> None:
    close = render_markdown(result_document(_run(CLOSE)))
    assert "### Arms compared" in close and "#### intent" in close and "| 90% interval |" in close
    assert "| baseline | candidate | 0.300 | 0.640 | +0.340 |" in close
    assert close.index("### Gates") < close.index("### Arms compared")
    assert _rule_line(close).startswith("**consider prompting**: best trained arm 'candidate' 0.640 is within 0.02")
    far = render_markdown(result_document(_run(FAR)))
    assert _rule_line(far).startswith("**keep training**: best trained arm 'candidate' 0.850 is more than 0.02")
    assert "settled by the interval" in _rule_line(far)
    assert "Arms compared" not in render_markdown(result_document(synthetic_run(items=20, gates=1)))


def test_html_shows_the_same_table_and_the_rule_which_flips_with_the_scores() -> None:
    def rule(page: str) -> tuple[str, str]:
        found = re.search(r'<p class="rule" data-verdict="([^"]+)"><strong>[^<]+</strong>: ([^<]+)</p>', page)
        assert found is not None
        return found.group(1), found.group(2)

    page = render_html(result_document(_run(CLOSE)))
    assert 'href="#arms-section"' in page and 'id="arms-section"' in page
    rows = re.findall(r'<tr class="arm-pair">(.*?)</tr>', page, re.S)
    assert len(rows) == 6
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", rows[2])
    assert cells[:5] == ["baseline", "candidate", "0.300", "0.640", "+0.340"] and cells[7] == "mcnemar (n=100)"
    verdict, reason = rule(page)
    assert verdict == "consider prompting" and reason.startswith("best trained arm &#39;candidate&#39; 0.640 is within")
    assert rule(render_html(result_document(_run(FAR))))[0] == "keep training"
    assert 'id="arms-section"' not in render_html(result_document(synthetic_run(items=20, gates=1)))


def test_a_stored_document_renders_the_same_section(tmp_path: Path) -> None:
    """``harness report RUN`` renders from the stored document: the section survives JSON."""
    doc = result_document(_run(FAR))
    stored = json.loads(json.dumps(doc))
    assert render_markdown(stored) == render_markdown(doc)
