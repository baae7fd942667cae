"""The HTML reporter: ``report.html``, one self-contained page per run that works offline.

It answers "may this model ship?" first (the verdict, the exit code and why), then shows the gates
with their intervals, a forest plot of every difference against its margin, every pair of arms
with the prompting rule's verdict (when the run compares more than two arms), the suite's history,
the forgetting curve and training loss, an item explorer (every item both models were scored on,
with the prompt, both raw answers and the reference, filtered by benchmark and outcome), the
curation ledger with examples of each drop reason, parity findings with their evidence, and
provenance.

Everything is inline: styles, the explorer's script, the charts' Vega-Lite specifications and the
Vega JavaScript that draws them (see ``_charts``); the page makes no network request.  The
explorer renders only the rows in view (a fixed row height over a scroll area), so 10,000 items
load as fast as 100.  The page is rendered from the result document alone, so ``harness report
RUN --format html`` writes the same bytes for a stored run.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import harness
from harness.lib.armview import arm_tables, confidence, header
from harness.lib.reportview import (
    OUTCOMES,
    benchmark_rows,
    gate_rows,
    headline,
    invariance_lines,
    item_pairs,
    number,
    signed,
)
from harness.lib.resultdoc import result_document, write_files
from harness.plugin.components import ComponentConfig, Reporter, RunContext
from harness.types import RunResult
from harness.plugin.registry import Registrar

TEMPLATES = Path(__file__).parent / "templates"
EXAMPLES_PER_REASON = 3
DIVERGED_SHOWN = 20


def _plain(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON.parse rejects NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element: no ``<``, ``>`` or ``&``
    survives unescaped, so no text in the data can close the element."""
    text = json.dumps(_plain(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def explorer_data(doc: dict[str, Any]) -> dict[str, Any]:
    """Rows of ``[benchmark, id, outcome, prompt, reference, baseline answer, baseline raw,
    baseline score, candidate answer, candidate raw, candidate score]`` (indexes for benchmark
    and outcome; a raw output is empty when it is the answer itself)."""
    labels: list[str] = []
    rows = []
    for p in item_pairs(doc):
        if not labels or labels[-1] != p.benchmark:
            labels.append(p.benchmark)
        b, c = p.baseline, p.candidate
        rows.append([
            len(labels) - 1, p.item_id, OUTCOMES.index(p.outcome), p.prompt, p.reference,
            b["prediction"], _raw(b), b["score"], c["prediction"], _raw(c), c["score"],
        ])
    return {"benchmarks": labels, "outcomes": list(OUTCOMES), "rows": rows}


def _raw(result: dict[str, Any]) -> str:
    """What the explorer shows as an item's raw output: every sample with its score when the
    benchmark drew several, else the raw output (empty when it is the answer itself)."""
    samples = result.get("samples") or []
    if samples:
        return "\n".join(f"[sample {i + 1}: {s['score']:g}] {s['raw']}" for i, s in enumerate(samples))
    raw = str(result.get("raw", ""))
    return raw if raw != result["prediction"] else ""


def _ledger(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The ledger's steps and up to ``EXAMPLES_PER_REASON`` examples of each drop and quarantine
    reason (source id and detail, PII-redacted as in ``harness curate``)."""
    ledger = doc.get("ledger")
    if not ledger:
        return None
    from harness.stages.curate_report import excerpt

    examples: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for d in ledger["dropped"]:
        key = f"{d['filter']}: {d['reason']}"
        if len(examples[key]) < EXAMPLES_PER_REASON:
            examples[key].append((d["source_id"], excerpt(d.get("detail", ""))))
    for q in ledger["quarantined"]:
        key = f"quarantined: {q['reason'].split(':')[0]}"
        if len(examples[key]) < EXAMPLES_PER_REASON:
            examples[key].append((q["source_id"], excerpt(f"{q['reason']} | {q['raw']}")))
    return {"stages": ledger["stages"], "balanced": ledger["balanced"], "examples": dict(examples)}


def _parity(doc: dict[str, Any]) -> dict[str, Any] | None:
    parity = doc.get("parity")
    if not parity:
        return None
    replays = []
    for c in parity["checks"]:
        per_request = (c.get("metrics") or {}).get("per_request")
        if per_request:
            diverged = [r for r in per_request if not r.get("agree")]
            replays.append({"check": c["check"], "total": len(per_request), "diverged": diverged[:DIVERGED_SHOWN],
                            "n_diverged": len(diverged)})
    return {"requests": parity["requests"], "notes": parity["notes"], "checks": parity["checks"], "replays": replays}


def _chart_specs(doc: dict[str, Any]) -> dict[str, str | None]:
    from harness_plugins.reporters import _charts

    specs = {
        "forest": _charts.forest(doc),
        "history": _charts.history(doc),
        "forgetting": _charts.forgetting(doc),
        "loss": _charts.loss(doc),
    }
    return {name: None if spec is None else script_json(spec) for name, spec in specs.items()}


def render_html(doc: dict[str, Any]) -> str:
    """The whole page, a pure function of the result document."""
    import jinja2

    from harness_plugins.reporters import _charts

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(signed=signed, number=number, tojson_script=script_json)
    bundle = _charts.vega_bundle().replace("</script", "<\\/script")
    return env.get_template("report.html.j2").render(
        doc=doc,
        head=headline(doc),
        gates=gate_rows(doc),
        benchmarks=benchmark_rows(doc),
        invariance=invariance_lines(doc),
        arms=arm_tables(doc.get("arm_pairs")),
        arms_header=header(doc["arm_pairs"]) if doc.get("arm_pairs") else (),
        arms_confidence=confidence(doc["arm_pairs"]) if doc.get("arm_pairs") else "",
        charts=_chart_specs(doc),
        explorer=script_json(explorer_data(doc)),
        ledger=_ledger(doc),
        parity=_parity(doc),
        style=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
        script=(TEMPLATES / "report.js").read_text(encoding="utf-8"),
        vega=bundle,
    )


class HtmlReporter(Reporter):
    name = "html"
    description = "report.html: one self-contained offline page (verdict, gates, charts, item explorer)"

    def __init__(self, config: ComponentConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        from harness.errors import require

        require("altair", extra="report")  # fail before any work, not after the run
        require("vl_convert", extra="report")

    def render(self, document: dict[str, Any]) -> dict[str, str]:
        return {"report.html": render_html(document)}

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        return write_files(self.render(result_document(result)), out_dir)


@harness.hookimpl
def harness_register_reporters(registrar: Registrar) -> None:
    registrar.add(HtmlReporter)
