"""The parity stage: read production requests, build both pipelines, run every check.

A check that raises is recorded as ``error`` with its message (never as a pass), and the other
checks still run.  Checks run in suite order and see the results of those before them, so that
``replay`` can attribute each divergence to a cause another check found.  As gates, a check
fails when it reports a finding at or above the suite's ``parity.gate.fail_on`` severity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harness.errors import ConfigError, HarnessError
from harness.lib.pipeline import Pipeline, Request
from harness.plugin.components import Backend
from harness.plugin.parity import ParityCheck, ParityContext
from harness.suite.config import LoadedSuite
from harness.suite.parity import SEVERITY_RANK, ParitySpec
from harness.types import CheckResult, Decision, ParityResult, Verdict

if TYPE_CHECKING:
    from harness.lib.console import RunConsole
    from harness.lib.models import ModelRef
    from harness.lib.store import Store


@dataclass
class ParityPlan:
    """Everything the stage needs, built and validated before any work."""

    spec: ParitySpec
    checks: dict[str, ParityCheck]
    requests: list[Request]
    offline_set: list[Request] | None
    notes: list[str]


def run_parity(
    plan: ParityPlan,
    loaded: LoadedSuite,
    model: ModelRef,
    backend: Backend,
    store: Store,
    console: RunConsole,
    seed: int,
    use_cache: bool = True,
) -> ParityResult:
    """Run every planned check on ``model`` (the one that would ship)."""
    spec = plan.spec
    try:
        offline = Pipeline.build("parity.offline", spec.offline, model.path, loaded.dir)
        production = Pipeline.build("parity.production", spec.production, model.path, loaded.dir)
    except ConfigError as exc:
        raise ConfigError(f"{loaded.where(('parity',))}: {exc}") from None
    result = ParityResult(requests=len(plan.requests), notes=list(plan.notes))
    result.pipelines = {"offline": offline.describe(), "production": production.describe()}
    ctx = ParityContext(
        plan.requests, plan.offline_set, offline, production, model, backend, store,
        progress=lambda d, t, m: None, seed=seed, use_cache=use_cache,
    )
    try:
        for label, check in plan.checks.items():
            started = time.perf_counter()
            with console.progress(f"parity {label}") as progress:
                ctx.progress = progress
                try:
                    out = check.run(ctx)
                except HarnessError as exc:
                    if exc.exit_code == 2 and not isinstance(exc, ConfigError):
                        raise
                    checked = CheckResult(label, check.name, "error", error=str(exc))
                except Exception as exc:  # a broken check is an error for that check only
                    checked = CheckResult(label, check.name, "error", error=f"{type(exc).__name__}: {exc}")
                else:
                    findings = tuple(out.findings)
                    status: Literal["findings", "ok"] = "findings" if findings else "ok"
                    checked = CheckResult(label, check.name, status, findings, dict(out.metrics))
            checked = _timed(checked, time.perf_counter() - started)
            ctx.results[label] = checked
            result.checks.append(checked)
            _announce(console, checked)
    finally:
        ctx.close()
    return result


def _timed(result: CheckResult, seconds: float) -> CheckResult:
    from dataclasses import replace

    return replace(result, seconds=round(seconds, 3))


def _announce(console: RunConsole, result: CheckResult) -> None:
    if result.status == "error":
        console.stage("parity", f"{result.check}: error: {result.error}", style="red")
        return
    if not result.findings:
        console.stage("parity", f"{result.check}: no finding")
        return
    for f in result.findings:
        style = {"high": "red", "medium": "yellow"}.get(f.severity, "")
        console.stage("parity", f"{result.check}: {f.severity} {f.cause}: {f.summary}", style=style)


def parity_decisions(spec: ParitySpec, result: ParityResult) -> list[Decision]:
    """One gate per check: ``fail`` on a finding at or above ``fail_on``, ``error`` when the
    check could not be made, ``pass`` otherwise."""
    if spec.gate is None:
        return []
    threshold = SEVERITY_RANK[spec.gate.fail_on]
    rule = f"no_findings(fail_on={spec.gate.fail_on})"
    decisions = []
    for checked in result.checks:
        gate = f"parity.{checked.check}"
        if checked.status == "error":
            verdict, reason = Verdict.ERROR, checked.error or "the check failed"
        else:
            blocking = [f for f in checked.findings if SEVERITY_RANK[f.severity] >= threshold]
            if blocking:
                verdict = Verdict.FAIL
                reason = "; ".join(f"{f.severity} {f.cause}: {f.summary}" for f in blocking)
            else:
                verdict = Verdict.PASS
                lower = len(checked.findings)
                reason = f"no finding at or above {spec.gate.fail_on}" + (f" ({lower} below)" if lower else "")
        decisions.append(Decision(gate, "parity", rule, verdict, reason, spec.gate.blocking))
    return decisions
