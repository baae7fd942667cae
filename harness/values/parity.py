"""What parity checks find: findings with their evidence, per check and per run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


Severity = Literal["high", "medium", "low"]
"""How much a parity finding matters."""


CheckStatus = Literal["ok", "findings", "error"]


@dataclass(frozen=True)
class Finding:
    """One cause of "good offline, bad in production", found by a parity check.

    ``cause`` is a short code (``system_prompt``, ``double_bos``, ``sampling_params``,
    ``truncation``, ``strict_parser``, ``traffic_shift``...); ``evidence`` holds what a person
    needs to see it (a readable diff, the first divergence, token ids, example request ids);
    ``affected`` of ``total`` requests show it.
    """

    check: str
    cause: str
    severity: Severity
    summary: str
    affected: int
    total: int
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.affected / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share}


@dataclass(frozen=True)
class CheckResult:
    """What one parity check returned: its findings and measurements, or the error it hit."""

    check: str
    component: str
    status: CheckStatus
    findings: tuple[Finding, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["findings"] = [f.to_json() for f in self.findings]
        return data


@dataclass
class ParityResult:
    """Every parity check of a run, in suite order."""

    requests: int
    checks: list[CheckResult] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """how the requests were read: counts, quarantined lines and requests left out, with reasons"""

    def findings(self) -> list[Finding]:
        return [f for c in self.checks for f in c.findings]

