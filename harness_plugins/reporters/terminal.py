"""The terminal reporter: the ledger, training, baseline vs candidate with confidence intervals,
and each gate's verdict, as rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import harness
from harness.plugin.components import ComponentConfig, Reporter, RunContext
from harness.lib.console import make_console
from harness.lib.variance_view import ablation_rows, seed_errors, seed_rows, seed_title
from harness.types import ForgettingResult
from harness.types import RunResult, TrainOutput, Verdict
from harness.plugin.registry import Registrar

_COLOURS = {
    Verdict.PASS: "green",
    Verdict.FAIL: "red",
    Verdict.INCONCLUSIVE: "yellow",
    Verdict.ERROR: "magenta",
}
MAIN_LABEL = "main"
"""The main training's column and legend label when trainings are compared."""
_EXIT_MEANING = {0: "all blocking gates pass", 1: "a gate failed", 3: "a check errored"}


class TerminalReporter(Reporter):
    name = "terminal"
    description = "summary tables on the terminal (ledger, training, benchmarks, gates)"

    def __init__(self, config: ComponentConfig, ctx: RunContext, console: Console | None = None) -> None:
        super().__init__(config, ctx)
        self.console = console or make_console()

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        """Every section the run has, in stage order, then the gates and the exit code."""
        out = self.console
        out.print()
        if result.ledger is not None:
            self._ledger(result)
        if result.train is not None:
            self._training(result)
        if result.forgetting is not None:
            self._forgetting(result)
        if result.forgetting_compare or result.compare_train:
            self._forgetting_compare(result)
        if result.parity is not None:
            self._parity(result)
        self._benchmarks(result)
        self._variance(result)
        self._gates(result)
        meaning = _EXIT_MEANING.get(result.exit_code, "")
        if result.exit_code == 1 and result.inconclusive_fails:
            meaning = "a gate failed or was inconclusive"
        out.print(f"exit {result.exit_code}: {meaning}; report: {out_dir}")
        return []

    def _ledger(self, result: RunResult) -> None:
        assert result.ledger is not None
        table = Table(title="Curation ledger (in = kept + dropped + quarantined)")
        for column in ("step", "in", "kept", "dropped", "quarantined", "reasons"):
            table.add_column(column, justify="right" if column in ("in", "kept", "dropped", "quarantined") else "left")
        for s in result.ledger.stages:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items()))
            table.add_row(s.name, str(s.n_in), str(s.kept), str(s.dropped), str(s.quarantined), reasons)
        self.console.print(table)

    def _training(self, result: RunResult) -> None:
        t = result.train
        assert t is not None
        origin = " (from cache)" if result.train_from_cache else ""
        self.console.print(
            f"Training{origin}: {t.steps} steps on {t.examples} examples, "
            f"{t.supervised_tokens} supervised tokens, loss {t.first_loss:.3f} -> {t.last_loss:.3f}, "
            f"{t.seconds:.0f}s" + "".join(f"; {n}" for n in t.notes)
        )

    def _benchmarks(self, result: RunResult) -> None:
        """Candidate against baseline per benchmark (when any ran), then evaluation errors."""
        table = Table(title="Benchmarks: candidate vs baseline on the same items")
        for column in ("benchmark", "metric", "n", _role(result, "baseline"), _role(result, "candidate"), "diff", "CI", "p", "source"):
            table.add_column(column)
        comparisons = {  # the gates between the run's own baseline and candidate, not other arm pairs
            d.benchmark: d.comparison for d in result.decisions
            if d.comparison and (d.baseline_arm, d.candidate_arm) == ("baseline", "candidate")
        }
        for label, per_model in result.benchmarks.items():
            base, cand = per_model.get("baseline"), per_model.get("candidate")
            any_res = base or cand
            assert any_res is not None
            cmp = comparisons.get(label)
            cached = [f"{m} {r.cached_items}/{len(r.items)}" for m, r in per_model.items() if r.cached_items]
            table.add_row(
                label,
                any_res.metric,
                str(len(any_res.items)),
                f"{base.score:.3f}" if base else "-",
                f"{cand.score:.3f}" if cand else "-",
                f"{cmp.diff:+.3f}" if cmp else "-",
                f"[{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}] ({1 - 2 * cmp.alpha:.0%})" if cmp else "-",
                f"{cmp.p_value:.3g}" if cmp else "-",
                ("cache: " + ", ".join(cached)) if cached else "computed",
            )
        if result.benchmarks:
            self.console.print(table)
        for label, per_model in result.benchmarks.items():
            others = [f"{m} {r.score:.3f}" for m, r in per_model.items() if m not in ("baseline", "candidate")]
            if others:
                self.console.print(f"{escape(label)}, other arms: {escape(', '.join(others))}")
        for error in result.eval_errors:
            self.console.print(f"[magenta]error[/] {escape(f'{error.benchmark} / {error.model}: {error.message}')}")
        for finding in result.invariance:
            if not finding.invariant:
                items = ", ".join(finding.affected[:10])
                self.console.print(f"[yellow]batch invariance[/] {escape(finding.line())}; items: {escape(items)}")

    def _variance(self, result: RunResult) -> None:
        """The training seeds' scores and spread; what each ablated filter bought."""
        seeds = result.seeds.to_json() if result.seeds is not None else None
        sections = [(seed_title(seeds) if seeds else "", seed_rows(seeds))]
        sections.append(("What each filter bought (full candidate minus the one trained without it)",
                         ablation_rows([a.to_json() for a in result.ablation])))  # fmt: skip
        for title, rows in sections:
            if rows is None:
                continue
            table = Table(title=escape(title))
            for column in rows[0]:
                table.add_column(column)
            for row in rows[1]:
                table.add_row(*map(escape, row))
            self.console.print(table)
        for line in seed_errors(seeds):
            self.console.print(f"[magenta]error[/] {escape(line)}")

    def _gates(self, result: RunResult) -> None:
        table = Table(title="Gates")
        for column in ("gate", "rule", "verdict", "reason"):
            table.add_column(column)
        for d in result.decisions:
            colour = _COLOURS[d.verdict]
            verdict = f"[{colour}]{d.shown}[/]" + ("" if d.blocking else " (advisory)")
            table.add_row(d.gate, d.rule, verdict, escape(d.reason))
        self.console.print(table)

    def _parity(self, result: RunResult) -> None:
        parity = result.parity
        assert parity is not None
        table = Table(title=f"Production parity: offline pipeline vs production on {parity.requests} requests")
        for column in ("check", "status", "severity", "cause", "affected", "finding / measurement"):
            table.add_column(column)
        for c in parity.checks:
            if c.status == "error":
                table.add_row(c.check, "[magenta]error[/]", "", "", "", escape(c.error or ""))
            elif not c.findings:
                table.add_row(c.check, "[green]ok[/]", "", "", "", escape(_headline(c.metrics)))
            for f in c.findings:
                colour = {"high": "red", "medium": "yellow"}.get(f.severity, "")
                table.add_row(
                    c.check, "finding", f"[{colour}]{f.severity}[/]" if colour else f.severity, f.cause,
                    f"{f.affected}/{f.total} ({f.share:.0%})", escape(f.summary),
                )
        self.console.print(table)
        for c in parity.checks:
            if "per_request" in c.metrics:
                self._replay(c.check, c.metrics)
        for c in parity.checks:
            for f in c.findings:
                ev = f.evidence
                if "diff" not in ev and "first_divergence" not in ev:
                    continue
                self.console.print(f"[bold]{c.check} / {f.cause}[/] (request {escape(str(ev.get('example_request')))}):")
                if "first_divergence" in ev:
                    self.console.print(escape(
                        f"  first divergence at token {ev['first_divergence']}: offline "
                        f"[{_tokens(ev['offline_tokens'])}] vs production [{_tokens(ev['production_tokens'])}]"
                    ))
                if ev.get("diff") and f.cause not in ("double_bos", "extra_bos", "missing_bos"):
                    self.console.print(escape(ev["diff"]))

    def _replay(self, label: str, m: dict[str, Any]) -> None:
        prefix = next((f"{v:.0%}" for k, v in m.items() if k.startswith("greedy_prefix_")), "-")
        self.console.print(
            f"{label}: {m['requests']} requests ({m['from_cache']} answers from the store), agreement "
            f"{m['agreement_rate']:.0%} within {m['logprob_tolerance']} nats/token, exact text {m['exact_text_match']:.0%}, "
            f"greedy prefix {prefix}, median |Δ log-prob| {m['median_abs_delta']:.2g}, max {m['max_abs_delta']:.2g}"
        )
        diverged = [r for r in m["per_request"] if not r["agree"]]
        if not diverged:
            return
        table = Table(title=f"{label}: requests that diverge (first {min(len(diverged), 10)} of {len(diverged)})")
        for column in ("request", "at", "production token (server / offline lp)", "offline top token", "attribution"):
            table.add_column(column)
        for r in diverged[:10]:
            d = r["first_divergence"]
            p, o = d["production_token"], d["offline_top_token"]
            table.add_row(
                escape(r["request"]), str(d["position"]),
                escape(f"{p['token']!r} {p['server_logprob']:.3f} / {p['offline_logprob']:.3f}"),
                escape(f"{o['token']!r} {o['offline_logprob']:.3f}"), escape(r["attribution"]),
            )
        self.console.print(table)

    def _forgetting(self, result: RunResult) -> None:
        f = result.forgetting
        assert f is not None
        table = Table(title="Forgetting curve: probe score (change vs step 0) per checkpoint step")
        table.add_column("probe")
        for step in f.steps:
            mark = " *" if step == f.selected_step else ""
            table.add_column(f"{step}{mark}", justify="right")
        for label, points in f.series.items():
            by_step = {p.step: p for p in points}
            cells = []
            for step in f.steps:
                p = by_step.get(step)
                if p is None:
                    cells.append("-")
                elif p.comparison is None:
                    cells.append(f"{p.score:.3f}")
                else:
                    flag = "[red] out[/]" if p.within_bound is False else ""
                    cells.append(f"{p.score:.3f} ({p.comparison.diff:+.3f}){flag}")
            bound = f" (bound -{f.bounds[label]:g})" if label in f.bounds else " (domain)"
            table.add_row(escape(label) + bound, *cells)
        self.console.print(table)
        chosen = f"step {f.selected_step}" if f.selected_step is not None else "none"
        if f.stopped_step is not None:
            self.console.print(f"[red]Training stopped at step {f.stopped_step} ({f.stop_when}):[/] {escape(f.stop_reason)}")
        self.console.print(f"Selected checkpoint (*): {chosen}")
        for step in sorted(f.reasons):
            self.console.print(f"  step {step}: {escape(f.reasons[step])}")

    def _forgetting_compare(self, result: RunResult) -> None:
        """One column per training (the main one first): each probe at the last step of that
        training's curve, with its change against the base model; then each training's loss."""
        curves: dict[str, ForgettingResult | None] = {MAIN_LABEL: result.forgetting}
        for label in [*result.compare_train, *result.forgetting_compare]:
            curves.setdefault(label, result.forgetting_compare.get(label))
        trains: dict[str, TrainOutput | str | None] = {MAIN_LABEL: result.train_error or result.train}
        trains.update(result.compare_train)
        if result.forgetting_compare:
            table = Table(title="Forgetting by training: change vs the base model at the last checkpoint")
            table.add_column("probe")
            for label, curve in curves.items():
                last = f" (step {curve.steps[-1]})" if curve is not None and curve.steps else ""
                table.add_column(escape(label) + last, justify="right")
            probes: dict[str, float | None] = {}
            for curve in curves.values():
                if curve is None:
                    continue
                for probe in curve.series:
                    bound = curve.bounds.get(probe)
                    probes[probe] = bound if probes.get(probe) is None else probes[probe]
            domains = {curve.domain for curve in curves.values() if curve is not None}
            for probe, bound in probes.items():
                role = " (domain)" if probe in domains else (f" (bound -{bound:g})" if bound is not None else "")
                table.add_row(escape(probe) + role, *(_last_point(curve, probe) for curve in curves.values()))
            table.add_section()
            table.add_row("training", *(_train_cell(trains.get(label)) for label in curves))
            self.console.print(table)
        for label, output in trains.items():
            if isinstance(output, str):
                self.console.print(f"[magenta]error[/] {escape(f'training {label}: {output}')}")
        for label, curve in curves.items():
            for error in curve.errors if curve is not None else ():
                self.console.print(f"[magenta]error[/] {escape(f'{label} curve: {error}')}")


def _last_point(curve: ForgettingResult | None, probe: str) -> str:
    """The probe at the last step of a training's curve: ``score (diff [ci_low, ci_high])``."""
    points = curve.series.get(probe) if curve is not None else None
    if not points:
        return "-"
    p = points[-1]
    text = f"{p.score:.3f}"
    if p.comparison is not None:
        c = p.comparison
        text += f" ({c.diff:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}])"
    if curve is not None and curve.steps and p.step != curve.steps[-1]:
        text += f" at step {p.step}"  # the last step could not be scored
    return text + ("[red] out[/]" if p.within_bound is False else "")


def _train_cell(output: TrainOutput | str | None) -> str:
    if output is None:
        return "-"
    if isinstance(output, str):
        return "[magenta]error[/]"
    return f"loss {output.last_loss:.3f}, {output.steps} steps"


def _tokens(window: list[dict[str, Any]]) -> str:
    return " ".join(f"{t['id']}:{t['token']}" for t in window)


def _headline(metrics: dict[str, Any]) -> str:
    """The one or two measurements that say most about a quiet check."""
    keys = ("agreement_rate", "exact_text_match", "identical", "requests", "p_value", "uncovered_share", "differences")
    flat = {**metrics.get("embedding", {}), **metrics}
    parts = []
    for key in keys:
        if key in flat:
            value = flat[key]
            parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts[:3])


def _role(result: RunResult, label: str) -> str:
    """A column heading: the role, and its arm when the suite names one other than the default."""
    arm = result.arms.get(label, {}).get("name")
    return f"{label} ({arm})" if arm and arm not in ("base", "trained") else label


@harness.hookimpl
def harness_register_reporters(registrar: Registrar) -> None:
    registrar.add(TerminalReporter)
