"""An ``AuditReport`` as rich tables: a summary, then one table per section that has something
to show.  User text is never read as rich markup."""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from .report import MAX_IDS, AuditReport


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:g}"


def render(report: AuditReport, console: Console) -> None:
    """Print ``report``: the summary, then each section that has something to show."""
    sections = (_summary, _balance, _diversity, _lengths, _problems, _duplicate_groups, _difficulty)
    for section in sections:
        table = section(report)
        if table is not None:
            console.print(table)


def _ids(report: AuditReport, source_ids: Iterable[str]) -> Text:
    """Source ids of the audited source shortened to their row or line number."""
    prefix = f"{report.source}:"
    return Text(", ".join(s.removeprefix(prefix) if report.source else s for s in source_ids))


def _summary(report: AuditReport) -> Table:
    fmt = report.format
    summary = Table(title=f"Data audit: {report.source}", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("records", str(report.records))
    reasons = ", ".join(f"{k}: {v}" for k, v in report.quarantine_reasons.items())
    summary.add_row("quarantined", Text(f"{report.quarantined}" + (f" ({reasons})" if reasons else "")))
    summary.add_row("format consistency", f"{fmt.rate:.1%} ({fmt.consistent} of {fmt.records})")
    for dup in report.duplicates:
        summary.add_row(
            f"duplicates ({dup.scope})",
            f"{dup.groups} groups, {dup.records_in_groups} records in them, {dup.redundant} redundant",
        )
    for note in report.notes:
        summary.add_row("note", Text(note))
    return summary


def _balance(report: AuditReport) -> Table | None:
    bal = report.balance
    if bal is None:
        return None
    table = Table(
        title=f"Category balance: {len(bal.counts)} categories, {bal.categorised} records "
        f"(uniform share {bal.uniform_share:.2%}, flagged below {bal.min_share:.2%})"
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (("category", "left"), ("count", "right"), ("share", "right"), ("", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for c in bal.counts:
        mark = "below min share" if c.flagged else ("smallest" if c.name in bal.smallest else "")
        table.add_row(Text(c.name or "(empty)"), str(c.count), f"{c.share:.2%}", Text(mark, style="red" if c.flagged else "yellow"))
    return table


def _diversity(report: AuditReport) -> Table | None:
    div = report.diversity
    if div is None:
        return None
    table = Table(
        title=f"Topic clusters of the user turns: {len(div.clusters)} clusters of {div.embedded} "
        f"records (mean size {div.mean_size:g}; under-represented below half of it)"
    )
    for column in ("id", "size", "share", "name", "examples", "top category", ""):
        table.add_column(column)
    for cl in div.clusters:
        top = f"{cl.top_category} ({cl.top_category_share:.0%})" if cl.top_category is not None else ""
        table.add_row(
            str(cl.id),
            str(cl.size),
            f"{cl.share:.1%}",
            Text(cl.name),
            Text("\n".join(cl.examples)),
            Text(top),
            Text("under-represented", style="red") if cl.under_represented else "",
        )
    return table


def _lengths(report: AuditReport) -> Table:
    table = Table(title="Lengths (characters; tokens when a tokenizer was given)")
    for column in ("role", "turns", "chars min", "median", "p90", "max", "tokens min", "median", "p90", "max"):
        table.add_column(column, justify="left" if column == "role" else "right")
    for ls in report.lengths:
        tok = ls.tokens
        table.add_row(
            ls.role,
            str(ls.turns),
            *(_fmt(v) for v in (ls.chars.min, ls.chars.median, ls.chars.p90, ls.chars.max)),
            *((_fmt(v) for v in (tok.min, tok.median, tok.p90, tok.max)) if tok else ("-",) * 4),
        )
    return table


def _problems(report: AuditReport) -> Table | None:
    fmt = report.format
    if not fmt.problems:
        return None
    table = Table(title="Format problems")
    for column in ("problem", "records", "example rows/lines"):
        table.add_column(column)
    for problem, count in fmt.problems.items():
        table.add_row(problem, str(count), _ids(report, fmt.examples[problem]))
    return table


def _duplicate_groups(report: AuditReport) -> Table | None:
    largest = [(dup.scope, g) for dup in report.duplicates for g in dup.largest]
    if not largest:
        return None
    table = Table(title="Largest duplicate groups")
    for column in ("scope", "size", "example", "rows/lines"):
        table.add_column(column)
    for scope, group in largest:
        table.add_row(scope, str(group.size), Text(group.example), _ids(report, group.source_ids[:MAX_IDS]))
    return table


def _difficulty(report: AuditReport) -> Table | None:
    d = report.difficulty
    if d is None:
        return None
    table = Table(title=f"Difficulty: reference-model loss of {d.measured} records")
    for column in ("mean", "min", "median", "p90", "max", "hardest"):
        table.add_column(column)
    hardest = ", ".join(f"{_ids(report, [sid])} ({loss:g})" for sid, loss in d.hardest)
    dist = d.distribution
    table.add_row(*(_fmt(v) for v in (d.mean, dist.min, dist.median, dist.p90, dist.max)), Text(hardest))
    return table
