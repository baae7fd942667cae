"""Paired statistical tests for gates: exact McNemar (binary scores) and paired bootstrap, both
cluster-aware when the benchmark labels its items' sources."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

import harness
from harness.lib import stats as stats
from harness.plugin.components import ComponentConfig, Statistic
from harness.types import Comparison
from harness.plugin.registry import Registrar


class McNemar(Statistic):
    name = "mcnemar"
    description = "exact McNemar test with the Agresti-Min interval, for 0/1 per-item scores"

    def applies_to(self, scores: Sequence[float]) -> bool:
        return stats.is_binary(scores)

    def compare(
        self, baseline: Sequence[float], candidate: Sequence[float], alpha: float, clusters: Sequence[str] | None = None
    ) -> Comparison:
        return stats.mcnemar(baseline, candidate, alpha, clusters)


class BootstrapConfig(ComponentConfig):
    resamples: int = Field(2000, ge=100)
    seed: int = 0


class PairedBootstrap(Statistic[BootstrapConfig]):
    name = "paired_bootstrap"
    description = "paired bootstrap of the mean difference, for any per-item score"
    Config = BootstrapConfig

    def compare(
        self, baseline: Sequence[float], candidate: Sequence[float], alpha: float, clusters: Sequence[str] | None = None
    ) -> Comparison:
        cfg = self.config
        return stats.paired_bootstrap(baseline, candidate, alpha, cfg.resamples, cfg.seed, clusters)


@harness.hookimpl
def harness_register_statistics(registrar: Registrar) -> None:
    registrar.add(McNemar)
    registrar.add(PairedBootstrap)
