"""What every stage gets from the run around it: the run's id, the store, the console, and
whether cached results may be reused.  Frozen: a stage cannot change the run's settings."""

from __future__ import annotations

from dataclasses import dataclass

from harness.lib.console import RunConsole
from harness.lib.store import Store


@dataclass(frozen=True)
class StageEnv:
    run_id: str
    store: Store
    console: RunConsole
    use_cache: bool = True
