"""The Markdown reporter: ``report.md``, a pull-request comment or job summary.

The verdict first, then the gate table, every pair of arms with the prompting rule's verdict
(when the run compares more than a baseline and a candidate), the largest regressions and gains
(benchmarks by their difference, then the items the candidate lost and won), and collapsible
details (benchmarks, curation ledger, parity findings, provenance).  GitHub refuses comments over 65,536 characters,
so the report is built section by section within ``LIMIT`` characters whatever the run's size:
a section that does not fit is cut row by row, and the report says what it cut.  A hidden marker
on the first line lets a CI job find its own earlier comment and update it.  When
``$GITHUB_STEP_SUMMARY`` is set, the report is also appended to that file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.lib.armview import arms_markdown
from harness.lib.reportview import (
    ItemPair, benchmark_rows, gate_rows, headline, invariance_lines, item_pairs, number, signed, stop_line,
)
from harness.lib.resultdoc import result_document, write_files
from harness.lib.variance_view import ablation_rows, seed_errors, seed_rows, seed_title
from harness.plugin.components import ComponentConfig, Reporter
from harness.types import RunResult
from harness.plugin.registry import Registrar

LIMIT = 65_000
MARKER = "<!-- finetune-harness report: {suite} -->"
ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "error": "💥"}
CELL_CHARS = 120


class MarkdownConfig(ComponentConfig):
    top: int = Field(10, ge=1, description="regressions and gains listed (benchmarks, and items per side)")
    step_summary: bool = Field(True, description="append the report to $GITHUB_STEP_SUMMARY when set")


def cell(text: Any, limit: int = CELL_CHARS) -> str:
    """One table cell: one line, pipes and angle brackets escaped, cut to ``limit``."""
    flat = " ".join(str(text).split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return flat.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'") or " "


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


class Budget:
    """Lines added while they fit in ``limit`` characters; remembers what had to be left out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.lines: list[str] = []
        self.cut: list[str] = []

    def room(self, reserve: int = 0) -> int:
        return self.limit - self.used - reserve

    def add(self, lines: list[str], what: str, reserve: int = 400, closing: Sequence[str] = ()) -> bool:
        """Add ``lines`` (then ``closing``) keeping ``reserve`` characters free; a block that does
        not fit is cut after the last line that does (a table keeps its header) and noted."""
        size = sum(len(line) + 1 for line in [*lines, *closing])
        if size <= self.room(reserve):
            self._put([*lines, *closing])
            return True
        kept, total = [], sum(len(c) + 1 for c in closing)
        for line in lines:
            if total + len(line) + 1 > self.room(reserve + 120):
                break
            kept.append(line)
            total += len(line) + 1
        dropped = len(lines) - len(kept)
        self.cut.append(f"{what}: {dropped} of {len(lines)} lines")
        if kept:
            self._put([*kept, f"*… {dropped} more lines cut to stay under {self.limit:,} characters*", *closing])
        return False

    def _put(self, lines: list[str]) -> None:
        self.lines += lines
        self.used += sum(len(line) + 1 for line in lines)


def _verdict(doc: dict[str, Any]) -> list[str]:
    head = headline(doc)
    icon = {"pass": "✅", "fail": "❌"}.get(head.status, "💥")
    lines = [MARKER.format(suite=cell(doc["suite"]["name"])), f"## {icon} {cell(doc['suite']['name'])}: exit {head.exit_code}, {head.meaning}", ""]
    lines += [f"- {cell(line, 400)}" for line in head.why[:20]]
    if len(head.why) > 20:
        lines.append(f"- … and {len(head.why) - 20} more")
    stopped = stop_line(doc)
    if stopped:
        lines.append(f"- ⏹️ {cell(stopped, 600)}")
    lines += ["", f"<sub>run `{doc['run_id']}` · {doc['started_at'][:19]} · {doc['duration_s']:.0f} s</sub>", ""]
    return lines


def _gates(doc: dict[str, Any]) -> list[str]:
    rows = [
        (
            f"{ICON.get(g.verdict, '')} {g.shown}" + ("" if g.blocking else " (advisory)"),
            g.gate, g.rule, signed(g.diff),
            f"[{signed(g.ci_low)}, {signed(g.ci_high)}]" if g.ci_low is not None else "-",
            number(g.p_value), f"≥ {number(g.mde)}" if g.mde is not None else "-", g.reason,
        )
        for g in gate_rows(doc)
    ]
    if not rows:
        return ["*The suite has no gates.*", ""]
    return ["### Gates", "", *table(("verdict", "gate", "rule", "diff", "interval", "p", "detectable", "reason"), rows), ""]


def _invariance(doc: dict[str, Any]) -> list[str]:
    """The batch invariance check, when the suite asked for it: advisory, right after the gates."""
    lines = invariance_lines(doc)
    if not lines:
        return []
    return ["### Batch invariance (advisory)", "", *(f"- {'✅' if ok else '⚠️'} {cell(text, 600)}" for ok, text in lines), ""]


def _variance(doc: dict[str, Any]) -> list[str]:
    """The training seeds' scores and spread, and what each ablated filter bought, when the
    suite asked for them (``train.seeds``, ``curate.ablate``)."""
    lines: list[str] = []
    seeds = seed_rows(doc.get("seeds"))
    if seeds is not None:
        lines += [f"### {cell(seed_title(doc['seeds']), 300)}", "", *table(*seeds), ""]
        lines += [f"- 💥 {cell(e, 600)}" for e in seed_errors(doc.get("seeds"))]
    ablation = ablation_rows(doc.get("ablation"))
    if ablation is not None:
        lines += ["### What each filter bought (full candidate minus the one trained without it)", "", *table(*ablation), ""]
    return lines


def _benchmark_moves(doc: dict[str, Any], top: int) -> list[str]:
    moves = [(g.diff, g) for g in gate_rows(doc) if g.diff is not None]
    if not moves:
        return []
    worst = [g for diff, g in sorted(moves, key=lambda m: m[0])[:top] if diff < 0]
    best = [g for diff, g in sorted(moves, key=lambda m: -m[0])[:top] if diff > 0]
    lines = ["### Largest regressions and gains", ""]
    for icon, chosen in (("📉", worst), ("📈", best)):
        rows = [(icon, g.benchmark, g.gate, signed(g.diff), f"[{signed(g.ci_low)}, {signed(g.ci_high)}]") for g in chosen]
        lines += table(("", "benchmark", "gate", "diff", "interval"), rows) + [""] if rows else []
    return lines


def _items(pairs: list[ItemPair], side: str, top: int) -> tuple[list[str], list[str], list[str]]:
    """The opening, rows and closing of a collapsible table of the items lost (or won)."""
    chosen = [p for p in pairs if p.outcome == side]
    chosen.sort(key=lambda p: p.change if side == "lost" else -p.change)
    title = f"Items the candidate {side}: {len(chosen)}" + (f" (the {top} largest changes)" if len(chosen) > top else "")
    rows = table(
        ("benchmark", "item", "reference", "baseline", "candidate"),
        [(p.benchmark, p.item_id, p.reference, f"{p.baseline['prediction']} ({number(p.baseline['score'])})",
          f"{p.candidate['prediction']} ({number(p.candidate['score'])})") for p in chosen[:top]],
    )
    return [f"<details><summary>{cell(title)}</summary>", ""], rows, ["", "</details>", ""]


def _details(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Collapsible sections, least important last: (name, lines including the wrapper)."""
    sections = []
    arms = {label: arm.get("name") for label, arm in (doc.get("arms") or {}).items() if isinstance(arm, dict)}
    role = {r: f"{r} ({arms[r]})" if arms.get(r) not in (None, "base", "trained") else r for r in ("baseline", "candidate")}
    bench = table(("benchmark", "metric", "n", role["baseline"], role["candidate"], "source"),
                  [(b.label, b.metric, b.n, number(b.baseline, 4), number(b.candidate, 4), b.source) for b in benchmark_rows(doc)])
    sections.append(("benchmarks", bench))
    ledger = doc.get("ledger")
    if ledger:
        rows: list[tuple[Any, ...]] = [(s["name"], s["in"], s["kept"], s["dropped"], s["quarantined"], ", ".join(f"{k} {v}" for k, v in s["reasons"].items())) for s in ledger["stages"]]
        sections.append(("curation ledger", table(("step", "in", "kept", "dropped", "quarantined", "reasons"), rows)))
    parity = doc.get("parity")
    if parity:
        rows = []
        for c in parity["checks"]:
            if c["status"] == "error":
                rows.append((c["check"], "error", "", c["error"]))
            rows += [(c["check"], f["severity"], f"{f['affected']}/{f['total']}", f"{f['cause']}: {f['summary']}") for f in c["findings"]]
            if c["status"] != "error" and not c["findings"]:
                rows.append((c["check"], "ok", "", "no finding"))
        sections.append((f"parity on {parity['requests']} requests", table(("check", "severity", "affected", "finding"), rows)))
    prov = doc.get("provenance") or {}
    rows = [(f"model {k}", v) for k, v in doc.get("models", {}).items()]
    rows += [(k, v) for k, v in prov.items() if k != "packages"] + list((prov.get("packages") or {}).items())
    sections.append(("provenance", table(("what", "value"), rows)))
    return sections


def render_markdown(doc: dict[str, Any], top: int = 10, limit: int = LIMIT) -> str:
    """The report, at most ``limit`` characters, whatever the number of gates and items."""
    budget = Budget(limit)
    budget.add(_verdict(doc), "verdict", reserve=200)
    budget.add(_gates(doc), "gates")
    budget.add(_invariance(doc), "batch invariance")
    budget.add(arms_markdown(doc.get("arm_pairs"), lambda text: cell(text, 600)), "arms compared")
    budget.add(_variance(doc), "seeds and ablations")
    budget.add(_benchmark_moves(doc, top), "regressions and gains")
    pairs = list(item_pairs(doc))
    for side in ("lost", "won"):
        opening, rows, closing = _items(pairs, side, top)
        if budget.room(600) > 0:
            budget.add([*opening, *rows], f"items {side}", closing=closing)
    for name, lines in _details(doc):
        if budget.room(600) > 0:
            budget.add([f"<details><summary>{cell(name)}</summary>", "", *lines], name, closing=["", "</details>", ""])
        else:
            budget.cut.append(f"{name}: left out")
    if budget.cut:
        note = f"*Cut to stay under {limit:,} characters: " + "; ".join(budget.cut) + ". The full report is report.html.*"
        budget.lines.append(note[: max(0, limit - budget.used - 2)])
    return "\n".join(budget.lines) + "\n"


class MarkdownReporter(Reporter[MarkdownConfig]):
    name = "markdown"
    description = "report.md: verdict, gate table, regressions and gains (<= 65,000 characters); job summary"
    Config = MarkdownConfig

    def render(self, document: dict[str, Any]) -> dict[str, str]:
        cfg = self.config
        return {"report.md": render_markdown(document, cfg.top)}

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        files = self.render(result_document(result))
        written = write_files(files, out_dir)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary and self.config.step_summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(files["report.md"])
        return written




@harness.hookimpl
def harness_register_reporters(registrar: Registrar) -> None:
    registrar.add(MarkdownReporter)
