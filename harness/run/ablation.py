"""Plan-time checks of ``curate.ablate`` (the filters switched off one at a time, each training
one more candidate: ``harness.run.variance``), each problem naming ``file:line``."""

from __future__ import annotations

from harness.errors import ConfigError, HarnessError
from harness.plugin.registry import Registries
from harness.suite.config import LoadedSuite


def check_ablate(loaded: LoadedSuite, registries: Registries) -> list[HarnessError]:
    """``curate.ablate``'s problems: a filter that is unknown, not in the chain, or listed twice,
    and an ablation in a suite without ``train``."""
    suite = loaded.suite
    chain = [ref.name for ref in suite.curate.filters]
    problems: list[HarnessError] = []
    known = registries["filter"].names()
    for i, name in enumerate(suite.curate.ablate):
        where = f"{loaded.where(('curate', 'ablate', i))}: curate.ablate.{i}"
        if name not in known:
            problems.append(ConfigError(f"{where}: unknown filter {name!r}; known: {', '.join(sorted(known))}"))
        elif name not in chain:
            problems.append(ConfigError(f"{where}: filter {name!r} is not in the curate chain ({', '.join(chain) or 'no filters'})"))
        elif name in suite.curate.ablate[:i]:
            problems.append(ConfigError(f"{where}: filter {name!r} is listed twice"))
    if suite.curate.ablate and suite.train is None:
        problems.append(ConfigError(f"{loaded.where(('curate', 'ablate'))}: curate.ablate: needs a 'train' stage (each ablation trains a candidate)"))
    return problems
