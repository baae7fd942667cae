"""What the reports show, read from a result document (``harness.lib.resultdoc``).

The HTML and Markdown reporters and ``harness compare`` share these views, so the verdict, a gate's
interval or an item's outcome read the same everywhere: the headline (exit code and why), one row
per gate, one row per benchmark, every item paired across baseline and candidate with its outcome,
and the differences between two runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from harness.types import InvarianceFinding, shown_verdict

EXIT_MEANING = {
    0: "all blocking gates pass",
    1: "a blocking gate failed",
    2: "bad input",
    3: "a check errored",
}
OUTCOMES = ("lost", "won", "both right", "both wrong", "tied")
"""An item's outcome: candidate worse (``lost``) or better (``won``) than the baseline on it, or
the same (``both right``/``both wrong`` for pass/fail scores, ``tied`` otherwise)."""
_MARGIN = re.compile(r"^\s*(\w+)\s*\((?:.*\bmargin\s*=\s*([-+0-9.eE]+))?.*\)\s*$")
_DEFAULT_MARGIN = {"non_inferior": 0.02, "superior": 0.0, "no_regression": 0.0}


def signed(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def number(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 10 ** -digits and x != 0 else f"{x:.{digits}f}"


def threshold(rule: str) -> float | None:
    """Where a gate rule draws its line on the difference (candidate - baseline): ``-margin``
    for non_inferior and no_regression, ``+margin`` for superior; None for other rules."""
    match = _MARGIN.match(rule)
    if not match or match.group(1) not in _DEFAULT_MARGIN:
        return None
    kind = match.group(1)
    margin = float(match.group(2)) if match.group(2) else _DEFAULT_MARGIN[kind]
    return margin if kind == "superior" else -margin


@dataclass(frozen=True)
class Headline:
    exit_code: int
    status: str
    """``pass``, ``fail`` or ``error``: the colour of the verdict."""
    meaning: str
    why: tuple[str, ...]


def headline(doc: dict[str, Any]) -> Headline:
    """The verdict first: the exit code, what it means, and the gates (or errors) behind it."""
    code = int(doc["exit_code"])
    inconclusive_fails = doc.get("gating", {}).get("inconclusive", "fail") == "fail"
    decisions = doc.get("decisions", [])
    blocking = [d for d in decisions if d["blocking"]]
    failing = {"fail", "error"} | ({"inconclusive"} if inconclusive_fails else set())
    why = [f"{d['gate']}: {d['verdict']}: {d['reason']}" for d in blocking if d["verdict"] in failing]
    meaning = EXIT_MEANING.get(code, f"exit code {code}")
    if code == 1 and inconclusive_fails and any(d["verdict"] == "inconclusive" for d in blocking):
        meaning = "a blocking gate failed or was inconclusive"
    if doc.get("train_error"):
        why.append(doc["train_error"])
    why += [f"{e['benchmark']} / {e['model']}: {e['message']}" for e in doc.get("eval_errors", [])]
    why += list(doc.get("plugin_errors", []))
    if not why:
        why = [f"{len(blocking)} blocking gate(s) pass"] if blocking else ["the suite has no blocking gate"]
    status = {0: "pass", 1: "fail"}.get(code, "error")
    return Headline(code, status, meaning, tuple(why))


def stop_line(doc: dict[str, Any]) -> str | None:
    """One line on an early stop of the training (``forgetting.stop``), or ``None``: the step,
    the rule that fired, why, and which checkpoint was gated instead."""
    f = doc.get("forgetting") or {}
    if f.get("stopped_step") is None:
        return None
    chosen = f"step {f['selected_step']}" if f.get("selected_step") is not None else "no checkpoint was eligible; the stopped one"
    return f"training stopped at step {f['stopped_step']} ({f.get('stop_when', '')}): {f.get('stop_reason', '')}; gated: {chosen}"


@dataclass(frozen=True)
class GateRow:
    gate: str
    benchmark: str
    rule: str
    verdict: str
    blocking: bool
    reason: str
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    level: float | None = None
    """The interval's confidence (``1 - 2 alpha``)."""
    p_value: float | None = None
    mde: float | None = None
    n: int | None = None
    test: str = ""
    threshold: float | None = None
    underpowered: bool = False

    @property
    def shown(self) -> str:
        """The verdict as reports show it (``pass (underpowered)`` for a weak pass)."""
        return shown_verdict(self.verdict, self.underpowered)


def gate_rows(doc: dict[str, Any]) -> list[GateRow]:
    rows = []
    for d in doc.get("decisions", []):
        c = d.get("comparison") or {}
        rows.append(
            GateRow(
                d["gate"], d["benchmark"], d["rule"], d["verdict"], d["blocking"], d["reason"],
                c.get("diff"), c.get("ci_low"), c.get("ci_high"),
                1 - 2 * c["alpha"] if "alpha" in c else None,
                c.get("p_value"), c.get("mde"), c.get("n"), c.get("test", ""), threshold(d["rule"]),
                bool(d.get("underpowered", False)),
            )
        )
    return rows


@dataclass(frozen=True)
class BenchmarkRow:
    label: str
    metric: str
    n: int
    baseline: float | None
    candidate: float | None
    source: str


def benchmark_rows(doc: dict[str, Any]) -> list[BenchmarkRow]:
    rows = []
    for label, per_model in doc.get("benchmarks", {}).items():
        any_res = next(iter(per_model.values()))
        cached = [f"{m} {r['cached_items']}/{r['n']}" for m, r in per_model.items() if r.get("cached_items")]
        rows.append(
            BenchmarkRow(
                label, any_res["metric"], any_res["n"],
                per_model["baseline"]["score"] if "baseline" in per_model else None,
                per_model["candidate"]["score"] if "candidate" in per_model else None,
                ("cache: " + ", ".join(cached)) if cached else "computed",
            )
        )
    return rows


SHOWN_ITEMS = 10
"""How many of a finding's items a report lists by name."""


def invariance_lines(doc: dict[str, Any]) -> list[tuple[bool, str]]:
    """The batch invariance check (``gating.check_batch_invariance``): per benchmark, whether it
    held and the sentence saying so, with the first items that differ."""
    lines = []
    for data in doc.get("invariance") or []:
        finding = InvarianceFinding.from_json(data)
        text = finding.line()
        if finding.affected:
            more = f" and {len(finding.affected) - SHOWN_ITEMS} more" if len(finding.affected) > SHOWN_ITEMS else ""
            text += f"; items: {', '.join(finding.affected[:SHOWN_ITEMS])}{more}"
        lines.append((finding.invariant, text))
    return lines


@dataclass(frozen=True)
class ItemPair:
    """One item scored for both models."""

    benchmark: str
    item_id: str
    prompt: str
    reference: str
    baseline: dict[str, Any]
    candidate: dict[str, Any]
    outcome: str

    @property
    def change(self) -> float:
        return float(self.candidate["score"]) - float(self.baseline["score"])


def outcome(base: float, cand: float, binary: bool) -> str:
    if cand > base + 1e-12:
        return "won"
    if cand < base - 1e-12:
        return "lost"
    if binary:
        return "both right" if cand >= 1 else "both wrong"
    return "tied"


def item_pairs(doc: dict[str, Any]) -> Iterator[ItemPair]:
    """Every item of every benchmark that both models were scored on, in benchmark order."""
    for label, per_model in doc.get("benchmarks", {}).items():
        if "baseline" not in per_model or "candidate" not in per_model:
            continue
        cand = {i["item_id"]: i for i in per_model["candidate"]["items"]}
        base_items = per_model["baseline"]["items"]
        binary = all(i["score"] in (0, 1) for i in base_items) and all(i["score"] in (0, 1) for i in cand.values())
        for b in base_items:
            c = cand.get(b["item_id"])
            if c is None:
                continue
            yield ItemPair(
                label, b["item_id"], b.get("prompt") or c.get("prompt", ""), b["reference"], b, c,
                outcome(b["score"], c["score"], binary),
            )


# ---------------------------------------------------------------------------- two runs


@dataclass(frozen=True)
class Flip:
    """An item whose score changed between two runs, for the same benchmark and model."""

    benchmark: str
    model: str
    item_id: str
    reference: str
    a: dict[str, Any]
    b: dict[str, Any]


@dataclass(frozen=True)
class RunDiff:
    decisions: list[tuple[str, str | None, str | None]]
    """(gate, verdict in A, verdict in B), for every gate of either run."""
    scores: list[tuple[str, str, float | None, float | None]]
    """(benchmark, model, score in A, score in B)."""
    flips: list[Flip]
    unpaired: dict[tuple[str, str], int]
    """(benchmark, model) -> how many items only one of the runs has."""


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> RunDiff:
    """What changed from run A to run B: verdicts, scores, and items whose score changed."""
    va = {d["gate"]: d["verdict"] for d in a.get("decisions", [])}
    vb = {d["gate"]: d["verdict"] for d in b.get("decisions", [])}
    decisions = [(g, va.get(g), vb.get(g)) for g in dict.fromkeys([*va, *vb])]
    scores, flips, unpaired = [], [], {}
    ba, bb = a.get("benchmarks", {}), b.get("benchmarks", {})
    for label in dict.fromkeys([*ba, *bb]):
        for model in dict.fromkeys([*ba.get(label, {}), *bb.get(label, {})]):
            ra, rb = ba.get(label, {}).get(model), bb.get(label, {}).get(model)
            scores.append((label, model, ra["score"] if ra else None, rb["score"] if rb else None))
            if not ra or not rb:
                continue
            ia = {i["item_id"]: i for i in ra["items"]}
            ib = {i["item_id"]: i for i in rb["items"]}
            missing = len(ia.keys() ^ ib.keys())
            if missing:
                unpaired[(label, model)] = missing
            for item_id, x in ia.items():
                y = ib.get(item_id)
                if y is not None and abs(x["score"] - y["score"]) > 1e-12:
                    flips.append(Flip(label, model, item_id, x["reference"], x, y))
    return RunDiff(decisions, scores, flips, unpaired)
