"""The HTML report's charts as Vega-Lite specifications, built with altair from a result document.

The page draws them with Vega-Embed, whose JavaScript (Vega, Vega-Lite and Vega-Embed, bundled by
``vl-convert-python``) is inlined into the page, so the report works offline and makes no request.
Data is inlined in each specification; every chart is a pure function of the document.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from harness.lib.reportview import gate_rows

VERDICT_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#bf8700", "error": "#8250df"}
WIDTH = 560


def _alt() -> Any:
    from harness.errors import require

    return require("altair", extra="report")


@functools.cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script that sets ``window.vegaEmbed`` (about 0.9 MB),
    for the Vega-Lite version altair writes specifications for."""
    from harness.errors import require

    alt = _alt()
    vlc = require("vl_convert", extra="report")
    version = "v" + "_".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    bundle: str = vlc.javascript_bundle(vl_version=version)
    return bundle


def _finite(x: Any) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _spec(chart: Any) -> dict[str, Any]:
    spec: dict[str, Any] = chart.properties(usermeta={"embedOptions": {"actions": False}}).to_dict()
    return spec


def forest(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Every gate's difference (candidate - baseline) with its interval, against its margin."""
    alt = _alt()
    rows = [
        {
            "gate": r.gate, "verdict": r.verdict, "diff": r.diff, "low": r.ci_low, "high": r.ci_high,
            "margin": r.threshold, "rule": r.rule, "p": _finite(r.p_value),
        }
        for r in gate_rows(doc)
        if _finite(r.diff) is not None and _finite(r.ci_low) is not None and _finite(r.ci_high) is not None
    ]
    if not rows:
        return None
    data = alt.Data(values=rows)
    colour = alt.Color(
        "verdict:N",
        scale=alt.Scale(domain=list(VERDICT_COLOURS), range=list(VERDICT_COLOURS.values())),
        legend=alt.Legend(orient="bottom"),
    )
    y = alt.Y("gate:N", sort=None, title=None)
    tooltip = ["gate:N", "rule:N", "verdict:N", alt.Tooltip("diff:Q", format="+.3f"),
               alt.Tooltip("low:Q", format="+.3f"), alt.Tooltip("high:Q", format="+.3f"), alt.Tooltip("p:Q", format=".3g")]
    interval = alt.Chart(data).mark_rule(strokeWidth=2).encode(
        y=y, x=alt.X("low:Q", title="candidate - baseline (interval; red tick: the gate's margin)"), x2="high:Q", color=colour
    )
    point = alt.Chart(data).mark_point(filled=True, size=70).encode(y=y, x="diff:Q", color=colour, tooltip=tooltip)
    margin = alt.Chart(data).transform_filter("isValid(datum.margin)").mark_tick(
        color="#d0021b", thickness=2, size=16
    ).encode(y=y, x="margin:Q")
    zero = alt.Chart(alt.Data(values=[{"zero": 0}])).mark_rule(color="#888", strokeDash=[4, 3]).encode(x="zero:Q")
    height = max(60, 28 * len(rows))
    return _spec(alt.layer(zero, interval, margin, point).properties(width=WIDTH, height=height))


def _curve_rows(label: str, points: list[dict[str, Any]], bound: float | None, training: str) -> list[dict[str, Any]]:
    base = points[0]["score"] if points and points[0]["step"] == 0 else None
    rows = []
    for p in points:
        c = p.get("comparison") or {}
        row = {"probe": label, "training": training, "step": p["step"], "score": _finite(p["score"]),
               "outside": p.get("within_bound") is False}
        if base is not None and c:
            row["low"], row["high"] = base + c["ci_low"], base + c["ci_high"]
        if base is not None and bound is not None:
            row["bound"] = base - bound
        rows.append(row)
    return rows


def forgetting(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Each probe's score per checkpoint step (step 0: the base model), the band its paired
    interval allows, the bound a general probe must stay above, and compared trainings."""
    alt = _alt()
    every: dict[str, Any] = {"main": doc.get("forgetting")} | dict(doc.get("forgetting_compare") or {})
    curves: dict[str, dict[str, Any]] = {k: v for k, v in every.items() if v}
    if not curves:
        return None
    main = curves.get("main") or next(iter(curves.values()))
    probes = list(dict.fromkeys(label for c in curves.values() for label in c["series"]))
    panels = []
    for probe in probes:
        rows = []
        for training, curve in curves.items():
            bound = curve["bounds"].get(probe) if training == "main" else None
            rows += _curve_rows(probe, curve["series"].get(probe, []), bound, training)
        data = alt.Data(values=rows)
        x = alt.X("step:Q", title="training step")
        layers = [
            alt.Chart(data).transform_filter("isValid(datum.low) && datum.training === 'main'").mark_area(opacity=0.18, color="#4a90d9")
            .encode(x=x, y=alt.Y("low:Q", title="score", scale=alt.Scale(zero=False)), y2="high:Q"),
            alt.Chart(data).transform_filter("isValid(datum.bound)").mark_line(color="#d0021b", strokeDash=[5, 3])
            .encode(x=x, y="bound:Q"),
            alt.Chart(data).mark_line(point=True).encode(
                x=x, y=alt.Y("score:Q", scale=alt.Scale(zero=False)), color=alt.Color("training:N", legend=alt.Legend(orient="bottom")),
                tooltip=["training:N", "step:Q", alt.Tooltip("score:Q", format=".4f"), "outside:N"],
            ),
        ]
        if main.get("selected_step") is not None:
            sel = alt.Data(values=[{"step": main["selected_step"]}])
            layers.append(alt.Chart(sel).mark_rule(color="#2a2", strokeDash=[2, 2]).encode(x="step:Q"))
        role = "domain" if probe == main.get("domain") else "general"
        panels.append(alt.layer(*layers).properties(width=250, height=170, title=f"{probe} ({role})"))
    return _spec(alt.concat(*panels, columns=2))


def loss(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The training loss at its first step and at every checkpoint."""
    alt = _alt()
    train = doc.get("train")
    if not train:
        return None
    rows = {1: train["first_loss"]}
    rows.update({c["step"]: c["loss"] for c in doc.get("checkpoints", [])})
    rows[train["steps"]] = train["last_loss"]
    values = [{"step": s, "loss": _finite(v)} for s, v in sorted(rows.items())]
    chart = alt.Chart(alt.Data(values=values)).mark_line(point=True).encode(
        x=alt.X("step:Q", title="training step"), y=alt.Y("loss:Q", scale=alt.Scale(zero=False)),
        tooltip=["step:Q", alt.Tooltip("loss:Q", format=".4f")],
    )
    return _spec(chart.properties(width=WIDTH, height=160))


def history(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Each benchmark's score over the suite's last runs (this one last), per model."""
    alt = _alt()
    points = [(h["run_id"], h["started_at"], h["scores"]) for h in doc.get("history", [])]
    if not points:
        return None
    now = {label: {m: r["score"] for m, r in per_model.items()} for label, per_model in doc.get("benchmarks", {}).items()}
    points.append((doc["run_id"], doc["started_at"], now))
    rows = [
        {"run": f"{i + 1}: {started[:16].replace('T', ' ')}", "run_id": run_id, "benchmark": label, "model": model,
         "score": _finite(score)}
        for i, (run_id, started, scores) in enumerate(points)
        for label, per_model in scores.items()
        for model, score in per_model.items()
    ]
    chart = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("run:O", sort=None, title="run (oldest first; the last is this one)", axis=alt.Axis(labelAngle=-30)),
        y=alt.Y("score:Q", scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", legend=alt.Legend(orient="bottom")),
        tooltip=["run_id:N", "model:N", alt.Tooltip("score:Q", format=".4f")],
    ).properties(width=250, height=150)
    return _spec(chart.facet(facet=alt.Facet("benchmark:N", title=None), columns=2).resolve_scale(y="independent"))
