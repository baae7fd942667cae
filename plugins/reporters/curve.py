"""The forgetting-curve reporter: ``forgetting.svg``, one small panel per probe.

Each panel shows the probe's score at every step (step 0 is the base model), the band of scores
that the paired confidence interval of the change allows (base score + CI of the difference), the
bound a general probe must stay above (base score - bound), and the selected checkpoint.  Plain
SVG, written without a plotting library, so it opens anywhere and diffs as text.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

import harness
from harness.components import Reporter
from harness.forgetting import CurvePoint, ForgettingResult
from harness.types import RunResult

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 340, 220, 52, 14, 34, 34
COLUMNS = 2


def _panel(label: str, points: list[CurvePoint], result: ForgettingResult, x0: float, y0: float) -> list[str]:
    steps = result.steps
    base = points[0].score if points and points[0].step == 0 else None
    values = [p.score for p in points]
    if base is not None:
        values += [base + p.comparison.ci_low for p in points if p.comparison]
        values += [base + p.comparison.ci_high for p in points if p.comparison]
        if label in result.bounds:
            values.append(base - result.bounds[label])
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    margin = (hi - lo) * 0.08
    lo, hi = lo - margin, hi + margin
    span = max(steps[-1] - steps[0], 1)

    def x(step: float) -> float:
        return x0 + PAD_L + (step - steps[0]) / span * (W - PAD_L - PAD_R)

    def y(value: float) -> float:
        return y0 + PAD_T + (hi - value) / (hi - lo) * (H - PAD_T - PAD_B)

    role = "domain" if label == result.domain else "general"
    out = [
        f'<rect x="{x0 + PAD_L}" y="{y0 + PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{x0 + PAD_L}" y="{y0 + 20}" font-size="13" font-weight="bold">{escape(label)} ({role})</text>',
    ]
    for value in (lo + margin, hi - margin):
        out.append(f'<text x="{x0 + PAD_L - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.3f}</text>')
    for step in steps:
        out.append(f'<text x="{x(step):.1f}" y="{y0 + H - PAD_B + 14}" font-size="10" text-anchor="middle">{step}</text>')
    if base is not None:
        band = [p for p in points if p.comparison]
        if band:
            upper = [(x(0), y(base))] + [(x(p.step), y(base + p.comparison.ci_high)) for p in band]  # type: ignore[union-attr]
            lower = [(x(p.step), y(base + p.comparison.ci_low)) for p in reversed(band)] + [(x(0), y(base))]  # type: ignore[union-attr]
            poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower)
            out.append(f'<polygon points="{poly}" fill="#4a90d9" fill-opacity="0.18" stroke="none"/>')
        if label in result.bounds:
            yb = y(base - result.bounds[label])
            out.append(f'<line x1="{x0 + PAD_L}" x2="{x0 + W - PAD_R}" y1="{yb:.1f}" y2="{yb:.1f}" stroke="#d0021b" stroke-dasharray="5,3"/>')
            out.append(f'<text x="{x0 + W - PAD_R - 2}" y="{yb - 3:.1f}" font-size="9" fill="#d0021b" text-anchor="end">bound -{result.bounds[label]:g}</text>')
    if result.selected_step is not None:
        xs = x(result.selected_step)
        out.append(f'<line x1="{xs:.1f}" x2="{xs:.1f}" y1="{y0 + PAD_T}" y2="{y0 + H - PAD_B}" stroke="#2a2" stroke-dasharray="2,2"/>')
    line = " ".join(f"{x(p.step):.1f},{y(p.score):.1f}" for p in points)
    colour = "#333" if role == "domain" else "#1f5fa8"
    out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for p in points:
        fill = "#d0021b" if p.within_bound is False else colour
        title = escape(f"step {p.step}: {p.score:.4f}" + (f"; {p.note}" if p.note else ""))
        out.append(f'<circle cx="{x(p.step):.1f}" cy="{y(p.score):.1f}" r="3.5" fill="{fill}"><title>{title}</title></circle>')
    return out


def render_svg(result: ForgettingResult) -> str:
    labels = [result.domain] + [label for label in result.series if label != result.domain]
    labels = [label for label in labels if result.series.get(label)]
    rows = max(1, -(-len(labels) // COLUMNS))
    width, height = W * COLUMNS + 10, H * rows + 50
    chosen = (
        f"dotted green: selected step {result.selected_step}"
        if result.selected_step is not None
        else "no checkpoint stayed within its bounds"
    )
    alphas = [p.comparison.alpha for pts in result.series.values() for p in pts if p.comparison]
    level = f"{1 - 2 * alphas[0]:.0%} " if alphas else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
        '<text x="10" y="20" font-size="15" font-weight="bold">Forgetting curve (x: training step; step 0 = base model)</text>',
        f'<text x="10" y="38" font-size="11">band: paired {level}CI of the change; '
        f"red dashes: bound; red dots: outside it; {escape(chosen)}</text>",
    ]
    for index, label in enumerate(labels):
        x0, y0 = (index % COLUMNS) * W, 50 + (index // COLUMNS) * H
        parts += _panel(label, result.series[label], result, x0, y0)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


class CurveReporter(Reporter):
    name = "curve"
    description = "forgetting.svg: each probe's score per checkpoint with CI bands and bounds"

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        if result.forgetting is None:
            return []
        path = out_dir / "forgetting.svg"
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(render_svg(result.forgetting), encoding="utf-8")
        os.replace(tmp, path)
        return [path]


@harness.hookimpl
def harness_register_reporters(registrar) -> None:
    registrar.add(CurveReporter)
