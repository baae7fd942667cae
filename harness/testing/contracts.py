"""Contract checks any component of a kind must pass; plugin authors call them in their tests.

Each function raises ``AssertionError`` with a message that names the component and what it
broke, so a test is one line: ``check_filter_ledger(my_filter, records)``.  The harness runs the
same checks on its built-in components (``tests/plugin/test_contracts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from harness.lib.models import LoadedModel
from harness.plugin.components import Benchmark, Component, Filter, FilterResult, Item
from harness.types import Conversation, ItemResult


def check_filter_ledger(component: Filter, records: Sequence[Conversation]) -> FilterResult:
    """Every input record comes out exactly once: kept + dropped + quarantined == input, and each
    drop or quarantine names this filter and a reason.  Returns the filter's result."""
    result = component.apply(list(records))
    name = component.name
    out = len(result.kept) + len(result.dropped) + len(result.quarantined)
    assert out == len(records), (
        f"filter {name!r} does not balance its ledger: {len(records)} in, {len(result.kept)} kept + "
        f"{len(result.dropped)} dropped + {len(result.quarantined)} quarantined = {out}"
    )
    for drop in result.dropped:
        assert drop.filter == name, f"filter {name!r} dropped {drop.source_id} as {drop.filter!r}"
        assert drop.reason, f"filter {name!r} dropped {drop.source_id} without a reason"
    for quarantined in result.quarantined:
        assert quarantined.filter == name, f"filter {name!r} quarantined {quarantined.source_id} as {quarantined.filter!r}"
        assert quarantined.reason, f"filter {name!r} quarantined {quarantined.source_id} without a reason"
    ids_in = sorted(r.source_id for r in records)
    ids_out = sorted([r.source_id for r in result.kept] + [d.source_id for d in result.dropped]
                     + [q.source_id for q in result.quarantined])
    assert ids_in == ids_out, f"filter {name!r} lost or duplicated records: {sorted(set(ids_in) ^ set(ids_out))}"
    return result


def check_benchmark_results(
    component: Benchmark, model: LoadedModel, items: Sequence[Item] | None = None
) -> list[ItemResult]:
    """``evaluate`` returns one result per item, in the items' order, with finite scores; the
    items have unique string ids.  ``items`` defaults to all of ``component.items()``."""
    chosen = list(component.items() if items is None else items)
    name = component.name
    ids = [item.get("id") for item in chosen]
    assert all(isinstance(i, str) and i for i in ids), f"benchmark {name!r} has items without a string id"
    assert len(set(ids)) == len(ids), f"benchmark {name!r} has duplicate item ids"
    results = component.evaluate(model, chosen, lambda done, total, message: None)
    assert [r.item_id for r in results] == ids, (
        f"benchmark {name!r} returned results for {len(results)} of {len(ids)} items (or out of order)"
    )
    for r in results:
        assert r.score == r.score, f"benchmark {name!r} scored item {r.item_id!r} as NaN"
    return results


def check_config_rejects_unknown_keys(component: type[Component]) -> None:
    """The component's ``Config`` refuses a key it does not know (a typo must not pass silently)."""
    try:
        component.Config.model_validate({"no_such_option_xyz": 1})
    except ValidationError as exc:
        assert any(e["type"] == "extra_forbidden" for e in exc.errors()), (
            f"{component.kind} {component.name!r}: unknown key rejected, but not as unknown: {exc}"
        )
        return
    raise AssertionError(f"{component.kind} {component.name!r} accepts an unknown config key")
