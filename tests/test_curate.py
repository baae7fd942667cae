"""The curate stage: every record accounted for, with reasons that point back to file:line."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import harness
from harness.plugin.components import Filter, FilterResult, RunContext
from harness.suite.config import load_suite
from harness.run.plan import curate_suite
from harness.errors import DataError, PluginError
from harness.plugin.registry import Registries
from harness.types import Dropped


def curate(loaded, harness_registries, ctx, examples=None):
    """The curate stage on the suite's run plan (its readers and filters built once)."""
    return curate_suite(loaded, harness_registries, ctx.work_dir, examples)


def alpaca(instruction: str, output: str) -> str:
    return json.dumps({"instruction": instruction, "input": "", "output": output})


# line -> content; what each line is meant to exercise is noted beside it
PLANTED = [
    alpaca("Track my order", "It ships tomorrow."),  # 1
    alpaca("Cancel my order", "Your order is cancelled."),  # 2
    alpaca("TRACK my  order", "It ships tomorrow."),  # 3 duplicate of 1 (case, whitespace)
    '{"instruction": "Refund", "output": ',  # 4 invalid JSON
    alpaca("Change my address", "Address updated."),  # 5
    alpaca("Say nothing", ""),  # 6 empty response
    alpaca("Reset password", "Use the reset link."),  # 7
    "",  # 8 blank: skipped, not counted
    alpaca("Is it ok?", "ok"),  # 9 response too short (min_chars 3)
    alpaca("Cancel my order", "Your order is cancelled."),  # 10 duplicate of 2
    json.dumps({"instruction": "No answer"}),  # 11 missing field
    alpaca("Open an account", "Sign up on the website."),  # 12
    alpaca("Whitespace only", "   "),  # 13 empty response
    *(alpaca(f"Question {i}", f"Answer number {i}.") for i in range(14, 21)),  # 14-20
]
N_LINES = 19  # non-blank lines
N_QUARANTINED = 2
N_DUPLICATES = 2
N_EMPTY, N_SHORT = 2, 1
N_KEPT = N_LINES - N_QUARANTINED - N_DUPLICATES - N_EMPTY - N_SHORT


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "support.jsonl"
    path.write_text("\n".join(PLANTED) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


@pytest.fixture
def suite_for(harness_write_suite):
    def make(data: list[dict], filters=None, max_quarantined: float = 0.2, name: str = "suite.yaml"):
        curate_block = {"max_quarantined_fraction": max_quarantined}
        if filters is not None:
            curate_block["filters"] = filters
        return load_suite(
            harness_write_suite(
                {"name": "cur", "model": "smollm2-135m-instruct", "data": data, "curate": curate_block},
                name=name,
            )
        )

    return make


FILTERS = ["exact_dedup", {"name": "min_response_length", "min_chars": 3}]


def test_curate_accounts_for_every_record(suite_for, data_file, harness_registries, ctx):
    loaded = suite_for([{"path": str(data_file), "format": "alpaca"}], FILTERS)
    outcome = curate(loaded, harness_registries, ctx)
    ledger = outcome.ledger
    src = str(data_file)

    assert ledger.balanced
    assert all(stage.balanced for stage in ledger.stages)
    table = [(s.n_in, s.kept, s.dropped, s.quarantined) for s in ledger.stages]
    assert table == [
        (N_LINES, N_LINES - N_QUARANTINED, 0, N_QUARANTINED),  # read
        (17, 17, 0, 0),  # select (split all, no sample)
        (17, 17 - N_DUPLICATES, N_DUPLICATES, 0),  # exact_dedup
        (15, N_KEPT, N_EMPTY + N_SHORT, 0),  # min_response_length
    ]
    assert [s.name for s in ledger.stages[2:]] == ["filter exact_dedup", "filter min_response_length"]
    assert ledger.stages[0].reasons == Counter(
        {"quarantined: invalid JSON": 1, "quarantined: missing output": 1}
    )
    assert ledger.stages[3].reasons == Counter({"empty_response": 2, "response_too_short": 1})

    assert [q.source_id for q in ledger.quarantined] == [f"{src}:4", f"{src}:11"]
    assert ledger.dropped == [
        Dropped(f"{src}:3", "exact_dedup", "duplicate", f"same as {src}:1"),
        Dropped(f"{src}:10", "exact_dedup", "duplicate", f"same as {src}:2"),
        Dropped(f"{src}:6", "min_response_length", "empty_response"),
        Dropped(f"{src}:9", "min_response_length", "response_too_short", "2 < 3 characters"),
        Dropped(f"{src}:13", "min_response_length", "empty_response"),
    ]
    kept_lines = [int(r.source_id.rsplit(":", 1)[1]) for r in outcome.records]
    assert kept_lines == [1, 2, 5, 7, 12, *range(14, 21)]
    assert len(outcome.records) == N_KEPT


def test_curate_digest_is_stable_and_content_sensitive(suite_for, data_file, harness_registries, ctx):
    loaded = suite_for([{"path": str(data_file), "format": "alpaca"}], FILTERS)
    first, again = curate(loaded, harness_registries, ctx), curate(loaded, harness_registries, ctx)
    assert first.digest == again.digest
    unfiltered = curate(suite_for([{"path": str(data_file), "format": "alpaca"}], name="b.yaml"), harness_registries, ctx)
    assert unfiltered.digest != first.digest


def test_too_many_malformed_lines_is_a_data_error(suite_for, data_file, harness_registries, ctx):
    loaded = suite_for([{"path": str(data_file), "format": "alpaca"}], FILTERS, max_quarantined=0.05)
    with pytest.raises(DataError) as info:
        curate(loaded, harness_registries, ctx)
    message = str(info.value)
    assert message.startswith(f"{data_file}:4: ")  # the first bad line
    assert f"{N_QUARANTINED} of {N_LINES} records are malformed" in message
    assert "max_quarantined_fraction" in message
    assert "invalid JSON" in message


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_data_file_is_a_data_error(suite_for, tmp_path, harness_registries, ctx, content):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content, encoding="utf-8")
    loaded = suite_for([{"path": str(empty), "format": "alpaca"}])
    with pytest.raises(DataError, match="is empty") as info:
        curate(loaded, harness_registries, ctx)
    assert str(empty) in str(info.value)


def test_missing_data_file_names_the_suite_line(harness_write_suite, tmp_path, harness_registries, ctx):
    suite_path = harness_write_suite(
        "name: cur\n"
        "model: smollm2-135m-instruct\n"
        "data:\n"
        "  - format: alpaca\n"
        "    path: nowhere/missing.jsonl\n"
    )
    with pytest.raises(DataError) as info:
        curate(load_suite(suite_path), harness_registries, ctx)
    message = str(info.value)
    assert message.startswith(f"{suite_path}:5: ")
    assert "does not exist" in message
    assert str(tmp_path / "nowhere" / "missing.jsonl") in message  # resolved against the suite


def test_nothing_left_after_filters_is_a_data_error(suite_for, tmp_path, harness_registries, ctx):
    path = tmp_path / "short.jsonl"
    path.write_text(alpaca("a", "no") + "\n" + alpaca("b", "") + "\n", encoding="utf-8")
    loaded = suite_for([{"path": str(path), "format": "alpaca"}], FILTERS)
    with pytest.raises(DataError, match="no records left after curation"):
        curate(loaded, harness_registries, ctx)


def test_train_and_holdout_splits_partition_the_records(suite_for, data_file, harness_registries, ctx):
    def source_ids(split: str) -> set[str]:
        source = {"path": str(data_file), "format": "alpaca", "split": split, "holdout_fraction": 0.3}
        outcome = curate(suite_for([source], name=f"{split}.yaml"), harness_registries, ctx)
        assert outcome.ledger.balanced
        return {r.source_id for r in outcome.records}

    train, holdout, everything = source_ids("train"), source_ids("holdout"), source_ids("all")
    assert len(everything) == N_LINES - N_QUARANTINED
    assert train and holdout
    assert train.isdisjoint(holdout)
    assert train | holdout == everything


def test_sample_keeps_a_seeded_subset(suite_for, data_file, harness_registries, ctx):
    source = {"path": str(data_file), "format": "alpaca", "sample": 5, "seed": 3}
    outcome = curate(suite_for([source]), harness_registries, ctx)
    again = curate(suite_for([source], name="again.yaml"), harness_registries, ctx)
    select = outcome.ledger.stages[1]

    assert len(outcome.records) == 5
    assert (select.n_in, select.kept, select.dropped) == (17, 5, 12)
    assert select.reasons == Counter({"not sampled": 12})
    assert [r.source_id for r in outcome.records] == [r.source_id for r in again.records]


# --------------------------------------------------------------------- misbehaving filters


class LosesOne(Filter):
    name = "loses_one"

    def apply(self, records):
        return FilterResult(list(records[1:]), [])


class InventsADrop(Filter):
    name = "invents_a_drop"

    def apply(self, records):
        return FilterResult(list(records[1:]), [Dropped("elsewhere:1", self.name, "made_up")])


class BadFilters:
    @harness.hookimpl
    def harness_register_filters(self, registrar):
        registrar.add(LosesOne)
        registrar.add(InventsADrop)


@pytest.fixture
def bad_registries(harness_plugin_manager):
    harness_plugin_manager.register_from(BadFilters(), "bad_filters", "bad-filters 0.1")
    return Registries.from_plugin_manager(harness_plugin_manager)


@pytest.mark.parametrize("name", ["loses_one", "invents_a_drop"])
def test_filter_that_loses_records_is_a_plugin_error(name, suite_for, data_file, bad_registries, ctx):
    loaded = suite_for([{"path": str(data_file), "format": "alpaca"}], ["exact_dedup", name])
    with pytest.raises(PluginError) as info:
        curate(loaded, bad_registries, ctx)
    message = str(info.value)
    assert f"filter {name!r}" in message
    assert "bad_filters (bad-filters 0.1)" in message
    assert "does not account for its input" in message


def test_a_sample_larger_than_the_data_is_an_error_naming_the_line(suite_for, data_file, harness_registries, ctx):
    source = {"path": str(data_file), "format": "alpaca", "sample": 500}
    with pytest.raises(DataError) as info:
        curate(suite_for([source]), harness_registries, ctx)
    message = str(info.value)
    assert re.match(r".*\.yaml:\d+: sample: 500 but .* has only 17 records; .*'sample: all'", message), message


def test_sample_all_keeps_every_record(suite_for, data_file, harness_registries, ctx):
    outcome = curate(suite_for([{"path": str(data_file), "format": "alpaca", "sample": "all"}]), harness_registries, ctx)
    assert len(outcome.records) == 17 and outcome.ledger.stages[1].dropped == 0
