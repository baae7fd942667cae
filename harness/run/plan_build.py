"""How the run plan builds one component: look its name up, validate its options, construct it,
and collect every problem so that all are reported at once.

``harness.run.plan`` assembles a whole run from these pieces; the side commands that build part
of a suite (``harness agree``, ``harness invariance``) use them too, so a component is built the
same way wherever it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from harness.errors import EXIT_BAD_INPUT, ConfigError, DataError, HarnessError, UnknownComponentError
from harness.lib.refs import ComponentRef, DataSource
from harness.plugin.components import Benchmark, Component, Reader, RunContext, Statistic, Trainer
from harness.plugin.registry import Registries, narrow
from harness.stages.curate import SourcePlan, check_quarantined, read_source, select
from harness.suite.config import LoadedSuite, format_validation
from harness.suite.preflight import check_data_path
from harness.suite.yamlpos import Loc

T = TypeVar("T")
C = TypeVar("C", bound=Component)

TEXT_READERS = frozenset({"csv"})
"""Readers of whole UTF-8 text files, whose encoding the plan checks before reading (a JSONL
reader decodes line by line and quarantines a line that is not UTF-8)."""


class PlanError(ConfigError):
    """One or more problems found while planning a run, each a line naming ``file:line``."""

    def __init__(self, problems: list[HarnessError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
        codes = {p.exit_code for p in problems}
        self.exit_code = EXIT_BAD_INPUT if EXIT_BAD_INPUT in codes or not codes else max(codes)


class Problems:
    """Collects the problems of every slot so that all are reported at once."""

    def __init__(self) -> None:
        self.found: list[HarnessError] = []

    def raise_any(self) -> None:
        """Raise the one problem found as it is, or a ``PlanError`` listing several."""
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            raise PlanError(self.found)

    def attempt(self, build: Callable[[], T]) -> T | None:
        """``build()``, or ``None`` with its problems recorded when it raises a ``HarnessError``."""
        try:
            return build()
        except PlanError as exc:
            self.found.extend(exc.problems)
        except HarnessError as exc:
            self.found.append(exc)
        return None


def run_context(loaded: LoadedSuite, registries: Registries, work_dir: Path) -> RunContext:
    """What components get from the run: folders, seed, and the registries to reach others."""
    return RunContext(loaded.dir, work_dir, loaded.suite.seed, registries)


def build_component(
    registries: Registries,
    kind: str,
    ref: ComponentRef,
    loc: Loc,
    loaded: LoadedSuite,
    ctx: RunContext,
    options_loc: Loc | None = None,
) -> Component:
    """Look up ``ref.name`` among the ``kind`` components and construct it with its options.

    ``loc`` is where the name stands in the suite; ``options_loc`` where the options do, when
    that differs (a data source's reader options sit beside its ``format`` key)."""
    try:
        info = registries.get(kind, ref.name)
    except UnknownComponentError as exc:
        raise UnknownComponentError(f"{loaded.where(loc)}: {exc}") from None
    try:
        config = info.cls.Config.model_validate(ref.options)
    except ValidationError as exc:
        message = format_validation(exc, loaded.positions, loc if options_loc is None else options_loc)
        raise ConfigError(f"{message} (in {kind} {ref.name!r} from {info.origin})") from None
    return info.cls(config, ctx)


def build_as(
    cls: type[C], registries: Registries, kind: str, ref: ComponentRef, loc: Loc, loaded: LoadedSuite, ctx: RunContext
) -> C:
    """``build_component``, checked to be a ``cls`` (the base class of ``kind``)."""
    return narrow(build_component(registries, kind, ref, loc, loaded, ctx), cls)


def build_benchmark(registries: Registries, loaded: LoadedSuite, ctx: RunContext, ref: ComponentRef, loc: Loc) -> Benchmark:
    """A benchmark whose items can be read and which can run here (``check_ready``)."""
    bench = narrow(build_component(registries, "benchmark", ref, loc, loaded, ctx), Benchmark)
    try:
        bench.items_digest()
        bench.check_ready()
    except HarnessError as exc:
        dotted = ".".join(map(str, loc))
        raise type(exc)(f"{loaded.where(loc)}: {dotted}: {exc}") from None
    return bench


def build_statistic(registries: Registries, loaded: LoadedSuite, ctx: RunContext, name: str, loc: Loc) -> Statistic:
    """The statistic called ``name`` (a gate's ``statistic``, or one ``auto`` chooses from)."""
    return narrow(build_component(registries, "statistic", ComponentRef(name=name), loc, loaded, ctx), Statistic)


def plan_source(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, loc: Loc, src: DataSource, *, malformed_ok: bool = False
) -> SourcePlan:
    """A data source's reader, built with its options, and its data read once, up front: a
    missing, unreadable, empty or mis-encoded file, too many malformed lines or a sample larger
    than the data are all found here, before any work (the curate stage takes the records read)."""
    ref = ComponentRef(name=src.format, options=src.options)
    reader = narrow(build_component(registries, "reader", ref, loc + ("format",), loaded, ctx, options_loc=loc), Reader)
    where = loaded.where(loc + ("path",))
    path = loaded.resolve_path(src.path, loc + ("path",))
    folder = bool(getattr(reader, "reads_folder", False))
    text = src.format in TEXT_READERS
    found = check_data_path(path, "utf-8" if text else None, where=where, kind="folder" if folder else "file", raw=src.path)
    if found:
        raise DataError(str(found[0]))
    origin = registries.get("reader", src.format).origin
    planned = SourcePlan(loc, src, reader, origin, path, where)
    read = read_source(planned)
    if not malformed_ok:  # logged requests are allowed their bad lines: parity lists them as notes
        limit = loaded.suite.curate.max_quarantined_fraction
        check_quarantined(read.quarantined, read.stage.n_in, limit, "curate.max_quarantined_fraction")
    select(src, read.records, where)  # the split and the sample fit the data
    return replace(planned, read=read)


def data_sources(config: BaseModel, loc: Loc) -> Iterator[tuple[Loc, DataSource]]:
    """Every ``DataSource`` inside a component's config, with its location in the suite."""
    for name in type(config).model_fields:
        value = getattr(config, name)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            where = loc + ((name,) if index is None else (name, index))
            if isinstance(item, DataSource):
                yield where, item
            elif isinstance(item, BaseModel):
                yield from data_sources(item, where)


def train_sources(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, trainers: Mapping[Loc, Trainer], problems: Problems
) -> dict[Loc, SourcePlan]:
    """The data a trainer's mitigations read: plain text must exist; other formats get a reader."""
    planned: dict[Loc, SourcePlan] = {}
    for trainer_loc, trainer in trainers.items():
        for loc, src in data_sources(trainer.config, trainer_loc):
            if src.format == "text":
                path = problems.attempt(partial(loaded.resolve_path, src.path, loc + ("path",)))
                if path is not None:
                    where = loaded.where(loc + ("path",))
                    problems.found.extend(DataError(str(p)) for p in check_data_path(path, where=where, raw=src.path))
                continue
            plan = problems.attempt(partial(plan_source, registries, loaded, ctx, loc, src))
            if plan is not None:
                planned[loc] = plan
    return planned
