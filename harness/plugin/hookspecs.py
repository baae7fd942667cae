"""The hook contract: every hook a plugin may implement, grouped by lifecycle phase.

Hooks are named ``harness_<verb>_<noun>``.  Register hooks receive a ``registrar`` bound to the
calling plugin, so each component remembers the plugin and distribution it came from.  Lifecycle
hooks receive one frozen dataclass, so fields can be added without breaking implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from harness import PROJECT_NAME

if TYPE_CHECKING:
    from harness.plugin.registry import Registrar
    from harness.types import CheckpointEvent, RunEndEvent, RunStartEvent, StageEndEvent

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# ------------------------------------------------------------------------------------ register


@hookspec
def harness_register_readers(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add data-file readers (``Reader`` subclasses)
    with ``registrar.add(cls)``; a suite's ``data.format`` names one."""


@hookspec
def harness_register_filters(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add curation filters (``Filter``
    subclasses); a suite's ``curate.filters`` lists them in order."""


@hookspec
def harness_register_trainers(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add trainers (``Trainer`` subclasses); a
    suite's ``train.trainer`` names one."""


@hookspec
def harness_register_benchmarks(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add benchmarks (``Benchmark`` subclasses)
    that return per-item results; a suite's ``evaluate`` maps gate names to them."""


@hookspec
def harness_register_statistics(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add paired statistical tests
    (``Statistic`` subclasses) that gates decide with."""


@hookspec
def harness_register_backends(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add model backends (``Backend``
    subclasses); a suite's ``model.backend`` names one."""


@hookspec
def harness_register_parity_checks(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add parity checks (``ParityCheck``
    subclasses) that compare the offline pipeline with production; a suite's ``parity.checks``
    names them."""


@hookspec
def harness_register_reporters(registrar: Registrar) -> None:
    """Called once when the registries are built.  Add reporters (``Reporter`` subclasses); a
    suite's ``report`` lists them."""


# ----------------------------------------------------------------------------------- lifecycle


@hookspec
def harness_on_run_start(event: RunStartEvent) -> None:
    """Called once after the suite is validated, before the first stage runs."""


@hookspec
def harness_on_stage_end(event: StageEndEvent) -> None:
    """Called after each stage (curate, train, evaluate, gate, report) with its outcome
    (``ok``, ``cached`` or ``error``) and duration."""


@hookspec
def harness_on_checkpoint(event: CheckpointEvent) -> None:
    """Called by the runner whenever a trainer saves a checkpoint (every ``eval_every`` steps
    and once at the end), with the checkpoint's path, step and loss."""


@hookspec
def harness_on_run_end(event: RunEndEvent) -> None:
    """Called once when the run is over, with its exit code and report folder."""


