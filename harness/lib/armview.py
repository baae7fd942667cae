"""The arm comparison as reports show it, read from its JSON form (a result document's
``arm_pairs``, written by ``harness.stages.pairs.comparison_document``).

One view for every report: per benchmark, a row per pair of arms (both scores, the difference
``second - first``, its paired interval, p and the test, or why there is no comparison), then
the prompting rule's verdict and reason.  The Markdown reporter, the HTML reporter and
``harness.stages.pairs.render_markdown`` all render from here, so the table reads the same
everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HEADER = ("first", "second", "first score", "second score", "second - first", "{confidence} interval", "p", "test")


@dataclass(frozen=True)
class PairRow:
    """One pair of arms on one benchmark, formatted for a table (``-`` where there is no value)."""

    first: str
    second: str
    first_score: str
    second_score: str
    diff: str
    interval: str
    p_value: str
    test: str
    """The test and its number of items, or the reason there is no comparison."""

    @property
    def cells(self) -> tuple[str, ...]:
        return (self.first, self.second, self.first_score, self.second_score, self.diff, self.interval, self.p_value, self.test)


@dataclass(frozen=True)
class ArmTable:
    """Every pair of arms on one benchmark and the rule's verdict there."""

    benchmark: str
    rows: tuple[PairRow, ...]
    verdict: str
    reason: str


def _row(pair: Mapping[str, Any]) -> PairRow:
    c = pair.get("comparison")
    if c is None:
        return PairRow(pair["first"], pair["second"], "-", "-", "-", "-", "-", str(pair.get("error") or "no comparison"))
    return PairRow(
        pair["first"], pair["second"], f"{c['baseline']:.3f}", f"{c['candidate']:.3f}", f"{c['diff']:+.3f}",
        f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", f"{c['p_value']:.3g}", f"{c['test']} (n={c['n']})",
    )  # fmt: skip


def arm_tables(section: Mapping[str, Any] | None) -> list[ArmTable]:
    """One table per benchmark the comparison covers; empty when there is none."""
    if not section:
        return []
    return [
        ArmTable(
            d["benchmark"], tuple(_row(p) for p in section["pairs"] if p["benchmark"] == d["benchmark"]),
            d["verdict"], d["reason"],
        )
        for d in section["decisions"]
    ]


def confidence(section: Mapping[str, Any]) -> str:
    """The intervals' confidence level, ``90%`` for the gates' default alpha of 0.05."""
    return f"{1 - 2 * float(section['alpha']):.0%}"


def header(section: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(h.format(confidence=confidence(section)) for h in HEADER)


def _flat(text: object) -> str:
    """A table cell on one line, its pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def arms_markdown(section: Mapping[str, Any] | None, cell: Callable[[object], str] = _flat) -> list[str]:
    """The Markdown section: ``### Arms compared``, then per benchmark its table of pairs and
    the rule's verdict in bold with its reason; ``cell`` escapes one table cell."""
    tables = arm_tables(section)
    if not tables or section is None:
        return []
    head = header(section)
    lines = ["### Arms compared", ""]
    for t in tables:
        lines += [f"#### {cell(t.benchmark)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell(c) for c in row.cells) + " |" for row in t.rows]
        lines += ["", f"**{t.verdict}**: {cell(t.reason)}", ""]
    return lines
