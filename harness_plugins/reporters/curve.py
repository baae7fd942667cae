"""The forgetting-curve reporter: ``forgetting.svg``, one small panel per probe.

Each panel shows the probe's score at every step (step 0 is the base model), the band of scores
that the paired confidence interval of the change allows (base score + CI of the difference), the
bound a general probe must stay above (base score - bound), and the selected checkpoint.  When
the suite compares trainings (``forgetting.compare``), each one's curve is drawn in the same panels
in its own colour, with a legend.  Plain SVG, written without a plotting library, so it opens
anywhere and diffs as text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import NamedTuple

import harness
from harness.plugin.components import Reporter
from harness.types import CurvePoint, ForgettingResult
from harness.types import RunResult
from harness.plugin.registry import Registrar

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 340, 220, 52, 14, 34, 34
COLUMNS = 2
MAIN_LABEL = "main"
"""The main training's legend label when trainings are compared."""
COMPARE_COLOURS = ("#e08214", "#7b3294", "#1b9e77", "#a6761d", "#e7298a", "#66a61e", "#666666")
"""One colour per compared training, in order (none of them the red of the bounds)."""


@dataclass(frozen=True)
class _Axes:
    """One panel's place (``x0``, ``y0``) and scales: ``steps`` across, scores ``lo`` to ``hi``
    (with a margin of ``margin`` on each side) up."""

    x0: float
    y0: float
    steps: list[int]
    lo: float
    hi: float
    margin: float

    def x(self, step: float) -> float:
        span = max(self.steps[-1] - self.steps[0], 1)
        return self.x0 + PAD_L + (step - self.steps[0]) / span * (W - PAD_L - PAD_R)

    def y(self, value: float) -> float:
        return self.y0 + PAD_T + (self.hi - value) / (self.hi - self.lo) * (H - PAD_T - PAD_B)


def _axes(values: list[float], x0: float, y0: float, steps: list[int]) -> _Axes:
    """Scales that hold every one of ``values``, with an 8% margin."""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    margin = (hi - lo) * 0.08
    return _Axes(x0, y0, steps, lo - margin, hi + margin, margin)


def _values(
    label: str, points: list[CurvePoint], result: ForgettingResult, others: Sequence[tuple[str, str, list[CurvePoint]]]
) -> list[float]:
    """Every score the panel draws: each curve, the main curve's band and its bound."""
    base = _base(points)
    values = [p.score for p in points] + [p.score for _, _, pts in others for p in pts]
    if base is not None:
        values += [base + p.comparison.ci_low for p in points if p.comparison]
        values += [base + p.comparison.ci_high for p in points if p.comparison]
        if label in result.bounds:
            values.append(base - result.bounds[label])
    return values


def _base(points: list[CurvePoint]) -> float | None:
    """The base model's score (the point at step 0), when the curve has one."""
    return points[0].score if points and points[0].step == 0 else None


def _panel(
    label: str,
    points: list[CurvePoint],
    result: ForgettingResult,
    at: tuple[float, float],
    steps: list[int] | None = None,
    others: Sequence[tuple[str, str, list[CurvePoint]]] = (),
) -> list[str]:
    """One probe's panel, its top left corner ``at`` (x, y): the main curve with its band and
    bound, and each compared training's curve (``others``: label, colour, points) on the same
    axes; ``steps`` is the x axis."""
    x0, y0 = at
    ax = _axes(_values(label, points, result, others), x0, y0, steps or result.steps)
    role = "domain" if label == result.domain else "general"
    out = _frame(ax, label, role)
    out += _band_and_bound(ax, label, points, result)
    if result.selected_step is not None:
        xs = ax.x(result.selected_step)
        out.append(f'<line x1="{xs:.1f}" x2="{xs:.1f}" y1="{y0 + PAD_T}" y2="{y0 + H - PAD_B}" stroke="#2a2" stroke-dasharray="2,2"/>')
    # Compared curves first, so the main one (with its band) is drawn on top.
    curves = [_Curve(name, colour, pts, 1.6, 2.8) for name, colour, pts in others if pts]
    curves += [_Curve(MAIN_LABEL, _main_colour(role), points, 2.0, 3.5)] if points else []
    for curve in curves:
        out += _curve(ax, curve, tagged=bool(others))
    out.append("</g>")
    return out


def _frame(ax: _Axes, label: str, role: str) -> list[str]:
    """The panel's group, background, title, the score labels and the step ticks."""
    x0, y0 = ax.x0, ax.y0
    out = [
        f'<g data-probe="{escape(label)}">',
        f'<rect x="{x0 + PAD_L}" y="{y0 + PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{x0 + PAD_L}" y="{y0 + 20}" font-size="13" font-weight="bold">{escape(label)} ({role})</text>',
    ]
    for value in (ax.lo + ax.margin, ax.hi - ax.margin):
        out.append(f'<text x="{x0 + PAD_L - 4}" y="{ax.y(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.3f}</text>')
    last_tick = float("-inf")
    for step in ax.steps:
        if ax.x(step) - last_tick < 16 and step != ax.steps[-1]:
            continue  # too close to the previous label to read
        last_tick = ax.x(step)
        out.append(f'<text x="{ax.x(step):.1f}" y="{y0 + H - PAD_B + 14}" font-size="10" text-anchor="middle">{step}</text>')
    return out


def _band_and_bound(ax: _Axes, label: str, points: list[CurvePoint], result: ForgettingResult) -> list[str]:
    """The band the change's confidence interval allows around the base score, and the bound."""
    base = _base(points)
    if base is None:
        return []
    x, y, out = ax.x, ax.y, []
    band = [(p.step, p.comparison) for p in points if p.comparison]
    if band:
        upper = [(x(0), y(base))] + [(x(step), y(base + c.ci_high)) for step, c in band]
        lower = [(x(step), y(base + c.ci_low)) for step, c in reversed(band)] + [(x(0), y(base))]
        poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower)
        out.append(f'<polygon points="{poly}" fill="#4a90d9" fill-opacity="0.18" stroke="none"/>')
    if label in result.bounds:
        yb = y(base - result.bounds[label])
        out.append(f'<line x1="{ax.x0 + PAD_L}" x2="{ax.x0 + W - PAD_R}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#d0021b" stroke-dasharray="5,3"/>')
        out.append(f'<text x="{ax.x0 + W - PAD_R - 2}" y="{yb - 3:.1f}" font-size="9" fill="#d0021b" text-anchor="end">bound -{result.bounds[label]:g}</text>')
    return out


class _Curve(NamedTuple):
    """One training's curve as drawn: its name, colour, points, line width and dot radius."""

    name: str
    colour: str
    points: list[CurvePoint]
    width: float
    radius: float


def _curve(ax: _Axes, curve: _Curve, tagged: bool) -> list[str]:
    """One training's curve and its points (red outside the bound), tagged with its name when
    trainings are compared."""
    name, colour, pts, width, radius = curve
    tag = f' data-training="{escape(name)}"' if tagged else ""
    line = " ".join(f"{ax.x(p.step):.1f},{ax.y(p.score):.1f}" for p in pts)
    out = [f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="{width:g}"{tag}/>']
    prefix = f"{name}, " if tagged else ""
    for p in pts:
        fill = "#d0021b" if p.within_bound is False else colour
        title = escape(f"{prefix}step {p.step}: {p.score:.4f}" + (f"; {p.note}" if p.note else ""))
        out.append(f'<circle cx="{ax.x(p.step):.1f}" cy="{ax.y(p.score):.1f}" r="{radius:g}" fill="{fill}"><title>{title}</title></circle>')
    return out


def _main_colour(role: str) -> str:
    return "#333" if role == "domain" else "#1f5fa8"


def _legend(entries: list[tuple[str, str]], top: float, width: float) -> tuple[list[str], float]:
    """A swatch and a label per training, wrapped to ``width``; returns the SVG and its height."""
    out: list[str] = []
    x, y = 10.0, top + 12
    for text, colour in entries:
        size = 30 + 6.5 * len(text) + 18
        if x > 10 and x + size > width:
            x, y = 10.0, y + 16
        out.append(f'<line x1="{x:.0f}" x2="{x + 24:.0f}" y1="{y - 4:.0f}" y2="{y - 4:.0f}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{x + 30:.0f}" y="{y:.0f}" font-size="11">{escape(text)}</text>')
        x += size
    return out, y - top + 8


def render_svg(result: ForgettingResult, compare: dict[str, ForgettingResult] | None = None) -> str:
    """The main curve of every probe, and beside it (same panel, same axes) each compared
    training's curve; the x axis spans every training's steps."""
    compare = compare or {}
    colours = {name: COMPARE_COLOURS[i % len(COMPARE_COLOURS)] for i, name in enumerate(compare)}
    labels = [result.domain] + [label for label in result.series if label != result.domain]
    labels += [label for other in compare.values() for label in other.series if label not in labels]
    labels = [label for label in dict.fromkeys(labels) if result.series.get(label) or any(o.series.get(label) for o in compare.values())]
    steps = sorted({*result.steps, *(s for other in compare.values() for s in other.steps)}) or [0]
    rows = max(1, -(-len(labels) // COLUMNS))
    width = W * COLUMNS + 10
    chosen = (
        f"dotted green: selected step {result.selected_step}"
        if result.selected_step is not None
        else "no checkpoint stayed within its bounds"
    )
    alphas = [p.comparison.alpha for pts in result.series.values() for p in pts if p.comparison]
    level = f"{1 - 2 * alphas[0]:.0%} " if alphas else ""
    parts = [
        '<text x="10" y="20" font-size="15" font-weight="bold">Forgetting curve (x: training step; step 0 = base model)</text>',
        (
            f'<text x="10" y="38" font-size="11">band: paired {level}CI of the change; '
            f"red dashes: bound; red dots: outside it; {escape(chosen)}</text>"
        ),
    ]
    top = 50.0
    if compare:
        main_entry = f"{MAIN_LABEL} (blue; dark grey on the domain panel; band, bounds and selection are its own)"
        legend, height = _legend([(main_entry, _main_colour("general"))] + [(n, c) for n, c in colours.items()], top - 6, width)
        parts += legend
        top += height
    for index, label in enumerate(labels):
        x0, y0 = (index % COLUMNS) * W, top + (index // COLUMNS) * H
        others = [(name, colours[name], other.series.get(label, [])) for name, other in compare.items()]
        parts += _panel(label, result.series.get(label, []), result, (x0, y0), steps, others)
    height = top + H * rows
    header = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:g}" font-family="sans-serif">'
    return "\n".join([header, *parts, "</svg>"]) + "\n"


class CurveReporter(Reporter):
    name = "curve"
    description = "forgetting.svg: each probe's score per checkpoint with CI bands and bounds"

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        if result.forgetting is None:
            return []
        path = out_dir / "forgetting.svg"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(render_svg(result.forgetting, result.forgetting_compare), encoding="utf-8")
        os.replace(tmp, path)
        return [path]


@harness.hookimpl
def harness_register_reporters(registrar: Registrar) -> None:
    registrar.add(CurveReporter)
