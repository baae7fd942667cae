"""The advice in the terminal: the arms table, the economics, every reason and the recommendation."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.tools.advise.decide import Advice, Reason, duration
from harness.tools.advise.measure import ArmMeasure

MARKS = {"fired": "[bold]fired[/]", "held": "held", "not_measured": "[dim]not measured[/]"}


def _vs_best(arm: ArmMeasure) -> str:
    c = arm.vs_best
    if c is None:
        return "best"
    return f"{100 * c.diff:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}] {c.test}"


def _or_dash(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def arms_table(advice: Advice) -> Table:
    m = advice.measurements
    table = Table(title=f"Arms on {m.benchmark} ({m.metric}, format check: {m.format_check})")
    alpha = next((a.vs_best.alpha for a in m.arms if a.vs_best is not None), 0.05)
    for column in ("arm", "kind", "score", f"vs best, points [{100 * (1 - 2 * alpha):.0f}% CI]", "format failures", "input tokens",
                   "context share", "training", "cost/month"):
        table.add_column(column)
    for arm in m.arms:
        cost = advice.economics.cost(arm.name)
        rate = arm.format_failure_rate
        table.add_row(
            escape(arm.name), f"{arm.kind} ({arm.examples} examples)" if arm.examples else arm.kind,
            f"{arm.score:.3f}", _vs_best(arm),
            "-" if rate is None else f"{arm.format_failures}/{arm.n} ({100 * rate:.1f}%)",
            _or_dash(cost.input_tokens if cost else None, ",.0f"),
            "-" if arm.cost is None else f"{100 * arm.cost.context_share:.1f}%",
            "-" if arm.train_seconds is None else f"{arm.train_seconds / 60:.1f} min",
            _or_dash(cost.monthly_cost if cost else None, ",.2f"),
        )
    return table


def economics_line(advice: Advice) -> str:
    e, t = advice.economics, advice.traffic
    traffic = "traffic not given" if t.requests_per_month is None else f"at {t.requests_per_month:,.0f} requests/month"
    if e.break_even_days is None:
        return f"Economics {traffic}: break-even not computed ({e.note})"
    days = "never" if math.isinf(e.break_even_days) else duration(e.break_even_days)
    return (f"Economics {traffic}: training {e.trained_arm} costs {e.training_cost:,.2f}, "
            f"saves {e.monthly_saving:,.2f}/month against {e.prompting_arm}; break-even: {days}")


def _reason_line(r: Reason) -> str:
    return f"  {MARKS[r.outcome]} [bold]{r.rule}[/] ({escape(r.source)}, recommends {r.recommends}): {escape(r.text)}"


def render(advice: Advice, console: Console) -> None:
    """Print the advice: arms, economics, reasons (in deciding order), recommendation."""
    console.print(arms_table(advice))
    console.print(escape(economics_line(advice)), soft_wrap=True)
    console.print("Reasons (the first rule that fires decides):")
    for reason in advice.reasons:
        console.print(_reason_line(reason), soft_wrap=True)
    console.print(f"[bold]Recommendation: {escape(advice.summary)}[/]", soft_wrap=True)
