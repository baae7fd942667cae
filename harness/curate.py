"""The curate stage: read every data source, select its split, run the filters, keep a ledger.

Every record is accounted for: at each step ``in = kept + dropped + quarantined``, each filter
drop carries a reason and the source id, and each malformed line is quarantined with its
``file:line`` and reason.  A filter whose output does not account for its input is a plugin error.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.components import Filter, Reader, RunContext
from harness.config import ComponentRef, DataSource, LoadedSuite, build_component
from harness.data import in_split, seeded_sample
from harness.errors import DataError, PluginError
from harness.registry import Registries
from harness.types import Conversation, Ledger, Quarantined, StageLedger
from harness.yamlpos import Loc


@dataclass
class CurateOutcome:
    records: list[Conversation]
    ledger: Ledger

    @property
    def digest(self) -> str:
        """Content hash of the curated set, in order; keys the training cache."""
        h = hashlib.sha256()
        for record in self.records:
            h.update(json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True).encode())
        return h.hexdigest()


def read_source(
    loaded: LoadedSuite, registries: Registries, ctx: RunContext, loc: Loc, src: DataSource
) -> tuple[list[Conversation], list[Quarantined], StageLedger]:
    """Read one data source with its reader; malformed lines come back quarantined, counted."""
    reader = build_component(
        registries,
        "reader",
        ComponentRef(name=src.format, options=src.options),
        loc + ("format",),
        loaded,
        ctx,
        options_loc=loc,
    )
    assert isinstance(reader, Reader)
    path = loaded.resolve_path(src.path, loc + ("path",))
    if not (path.is_dir() if getattr(reader, "reads_folder", False) else path.is_file()):
        raise DataError(f"{loaded.where(loc + ('path',))}: data file not found: {path}")
    records: list[Conversation] = []
    quarantined: list[Quarantined] = []
    for item in reader.read(path, src.path):
        (quarantined if isinstance(item, Quarantined) else records).append(item)  # type: ignore[arg-type]
    stage = StageLedger(f"read {Path(src.path).name}")
    stage.n_in = len(records) + len(quarantined)
    stage.kept, stage.quarantined = len(records), len(quarantined)
    stage.reasons.update(Counter(f"quarantined: {q.reason.split(':')[0]}" for q in quarantined))
    if stage.n_in == 0:
        raise DataError(f"{loaded.where(loc + ('path',))}: data set is empty: {path}")
    return records, quarantined, stage


def select(src: DataSource, records: list[Conversation]) -> tuple[list[Conversation], StageLedger]:
    """Keep ``src``'s split, then its seeded sample; the ledger counts what was left out."""
    stage = StageLedger(f"select {Path(src.path).name} (split={src.split}, sample={src.sample})")
    stage.n_in = len(records)
    chosen = [r for r in records if in_split(r.source_id, src.split, src.holdout_fraction, src.seed)]
    if len(chosen) < len(records):
        stage.reasons[f"not in {src.split} split"] = len(records) - len(chosen)
    if src.sample is not None and src.sample < len(chosen):
        sampled = seeded_sample(chosen, src.sample, src.seed, key=lambda r: r.source_id)
        stage.reasons["not sampled"] = len(chosen) - len(sampled)
        chosen = sampled
    stage.kept = len(chosen)
    stage.dropped = stage.n_in - stage.kept
    return chosen, stage


def _run_filter(flt: Filter, records: list[Conversation], ledger: Ledger, origin: str) -> list[Conversation]:
    result = flt.apply(records)
    stage = StageLedger(f"filter {flt.name}", n_in=len(records))
    stage.kept, stage.dropped, stage.quarantined = len(result.kept), len(result.dropped), len(result.quarantined)
    stage.reasons.update(Counter(d.reason for d in result.dropped))
    stage.reasons.update(Counter(f"quarantined: {q.reason.split(' (')[0]}" for q in result.quarantined))
    stage.reasons.update(Counter({f"redacted: {k}": v for k, v in result.redacted.items()}))
    seen = (
        Counter(r.source_id for r in result.kept)
        + Counter(d.source_id for d in result.dropped)
        + Counter(q.source_id for q in result.quarantined)
    )
    if not stage.balanced or seen != Counter(r.source_id for r in records):
        raise PluginError(
            f"filter {flt.name!r} from {origin} does not account for its input: {stage.n_in} in, "
            f"{stage.kept} kept, {stage.dropped} dropped, {stage.quarantined} quarantined"
        )
    ledger.stages.append(stage)
    ledger.dropped.extend(result.dropped)
    ledger.quarantined.extend(result.quarantined)
    return list(result.kept)


def curate(loaded: LoadedSuite, registries: Registries, ctx: RunContext) -> CurateOutcome:
    """Run the curate stage of ``loaded``; raise ``DataError`` when nothing usable is left."""
    suite = loaded.suite
    ledger = Ledger()
    records: list[Conversation] = []
    total_in = 0
    for index, src in enumerate(suite.data):
        read, quarantined, read_stage = read_source(loaded, registries, ctx, ("data", index), src)
        total_in += read_stage.n_in
        ledger.stages.append(read_stage)
        ledger.quarantined.extend(quarantined)
        chosen, select_stage = select(src, read)
        ledger.stages.append(select_stage)
        records.extend(chosen)
    fraction = len(ledger.quarantined) / total_in if total_in else 0.0
    if fraction > suite.curate.max_quarantined_fraction:
        first = ledger.quarantined[0]
        raise DataError(
            f"{first.source_id}: {len(ledger.quarantined)} of {total_in} records are malformed "
            f"({fraction:.1%} > curate.max_quarantined_fraction); first: {first.reason}"
        )
    for index, ref in enumerate(suite.curate.filters):
        loc = ("curate", "filters", index)
        flt = build_component(registries, "filter", ref, loc, loaded, ctx)
        assert isinstance(flt, Filter)
        records = _run_filter(flt, records, ledger, registries.get("filter", ref.name).origin)
    if not records:
        sources = ", ".join(s.path for s in suite.data) or "no data sources"
        raise DataError(f"{loaded.where(('data',))}: no records left after curation of {sources}")
    return CurateOutcome(records, ledger)
