"""The contract checks of ``harness.testing.contracts`` on every built-in component they apply
to, and on components that break them (so the checks can fail)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.lib.refs import ComponentConfig
from harness.plugin.components import Benchmark, Filter, FilterActionConfig, FilterResult, RunContext
from harness.plugin.manager import get_plugin_manager
from harness.plugin.registry import Registries
from harness.testing.contracts import check_benchmark_results, check_config_rejects_unknown_keys, check_filter_ledger
from harness.testing.fake_model import fake_model
from harness.types import Conversation, Dropped, ItemResult, Message

REGISTRIES = Registries.from_plugin_manager(get_plugin_manager(load_entrypoints=False))

NOT_RUN_HERE = {
    "perplexity_outliers": "needs 20+ records scored by a real model (tests/plugins/test_perplexity.py)",
    "lm_eval_task": "needs a task definition in its options (tests/plugins/test_lmeval_task.py)",
}
"""Built-ins whose ledger or per-item contract needs more than a few records and the fake model."""

TEXTS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Mail me at jane@example.com or call 555-123-4567", "Sure, I will write to you soon."),
    ("hi", "ok"),
    ("Wie geht es dir heute, mein Freund?", "Mir geht es gut, danke der Nachfrage."),
    ("Repeat after me", "la la la la la la la la la la la la la la la la la la la la"),
]
RECORDS = [Conversation((Message("user", q), Message("assistant", a)), f"data.jsonl:{i + 1}") for i, (q, a) in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    root = tmp_path_factory.mktemp("contracts")
    return RunContext(root, root / "work", builder=REGISTRIES)


@pytest.mark.parametrize("kind,name", [(i.kind, i.name) for i in REGISTRIES.all()])
def test_every_builtin_config_rejects_unknown_keys(kind: str, name: str) -> None:
    check_config_rejects_unknown_keys(REGISTRIES.get(kind, name).cls)


FILTER_CASES = [
    (info.name, action)
    for info in REGISTRIES["filter"] if info.name not in NOT_RUN_HERE
    for action in (["drop", "quarantine"] if issubclass(info.cls.Config, FilterActionConfig) else ["drop"])
]


@pytest.mark.parametrize("name,action", FILTER_CASES)
def test_every_builtin_filter_balances_its_ledger(name: str, action: str, ctx: RunContext) -> None:
    options = {"action": action} if action != "drop" else {}
    check_filter_ledger(REGISTRIES.build("filter", name, options, ctx), RECORDS)


def test_the_ledger_contract_sees_removals() -> None:
    """The records above do trip filters (duplicates at least), so the ledger check is not vacuous."""
    result = check_filter_ledger(REGISTRIES.build("filter", "exact_dedup", {}, RunContext(Path("."), Path("."))), RECORDS)
    assert [d.source_id for d in result.dropped] == ["data.jsonl:2"]


@pytest.fixture(scope="module")
def model():
    return fake_model()


@pytest.mark.parametrize("name", [n for n in REGISTRIES["benchmark"].names() if n not in NOT_RUN_HERE])
def test_every_builtin_benchmark_returns_a_result_per_item(name: str, ctx: RunContext, model) -> None:
    benchmark = REGISTRIES.build("benchmark", name, {}, ctx)
    assert isinstance(benchmark, Benchmark)
    check_benchmark_results(benchmark, model, benchmark.items()[:3])


# ------------------------------------------------------------------------ the checks can fail


class _Loses(Filter):
    name = "loses"

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        return FilterResult(list(records[1:]), [])


class _Anonymous(Filter):
    name = "anonymous"

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        return FilterResult(list(records[1:]), [Dropped(records[0].source_id, "someone_else", "why")])


class _Skips(Benchmark):
    name = "skips"

    def items(self):
        return [{"id": "a"}, {"id": "b"}]

    def evaluate(self, model, items, progress):
        return [ItemResult("a", "", "", 1.0)]


class _Lax(Filter):
    name = "lax"

    class Config(ComponentConfig):
        model_config = {"extra": "allow"}


def test_the_checks_fail_on_components_that_break_the_contract(model) -> None:
    here = RunContext(Path("."), Path("."))
    with pytest.raises(AssertionError, match="'loses' does not balance its ledger: 6 in, 5 kept"):
        check_filter_ledger(_Loses(ComponentConfig(), here), RECORDS)
    with pytest.raises(AssertionError, match="'anonymous' dropped data.jsonl:1 as 'someone_else'"):
        check_filter_ledger(_Anonymous(ComponentConfig(), here), RECORDS)
    with pytest.raises(AssertionError, match="'skips' returned results for 1 of 2 items"):
        check_benchmark_results(_Skips(ComponentConfig(), here), model)
    with pytest.raises(AssertionError, match="filter 'lax' accepts an unknown config key"):
        check_config_rejects_unknown_keys(_Lax)


def test_item_id_is_the_typed_id_and_refuses_items_without_one() -> None:
    from harness.errors import DataError
    from harness.plugin.components import item_id

    assert item_id({"id": "mmlu/anatomy/3", "question": "q"}) == "mmlu/anatomy/3"
    for bad in ({"question": "q"}, {"id": 3}, {"id": ""}):
        with pytest.raises(DataError, match="benchmark item without a string id"):
            item_id(bad)
