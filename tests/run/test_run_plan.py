"""The run plan (``harness.run.plan``): every component slot is built and checked before any
work, by ``harness validate`` and ``harness run`` alike, and every problem is reported at once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.run.plan import PlanError, plan_run

BITEXT = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
BASE: dict[str, Any] = {
    "name": "plan",
    "model": "smollm2-135m-instruct",
    "data": [{"path": BITEXT, "format": "csv", "sample": 8, "user": "{instruction}", "assistant": "{intent}"}],
    "curate": {"filters": ["exact_dedup"]},
    "train": {"name": "lora", "r": 4},
    "forgetting": {
        "probes": {"domain": {"name": "support_intent", "sample": 4}, "mmlu": {"name": "mmlu", "per_subject": 1}},
        "domain": "domain",
        "compare": {"full": {"name": "full", "max_steps": 1}},
    },
    "evaluate": {"intent": {"name": "support_intent", "sample": 4}},
    "gates": {"intent": {"rule": "superior()", "statistic": "mcnemar"}},
    "report": ["json"],
    "parity": {
        "requests": {"path": BITEXT, "format": "csv", "sample": 4, "user": "{instruction}", "assistant": "{intent}"},
        "checks": {"template": "template"},
    },
}


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


# (where the bad value goes, the value, the line's key, what the message says)
BAD_SLOTS = {
    "reader": (("data", 0, "delimter"), ";", "delimter", "unknown key"),
    "data path": (("data", 0, "path"), "missing/data.csv", "path", "does not exist"),
    "filter": (("curate", "filters", 0), {"name": "exact_dedup", "scop": "prompt"}, "scop", "unknown key"),
    "trainer": (("train", "rnk"), 8, "rnk", "unknown key"),
    "compared trainer": (("forgetting", "compare", "full", "epohcs"), 1, "epohcs", "unknown key"),
    "probe": (("forgetting", "probes", "mmlu", "per_subjct"), 1, "per_subjct", "unknown key"),
    "probe benchmark": (("forgetting", "probes", "mmlu", "name"), "mmlux", "mmlu", "unknown benchmark 'mmlux'"),
    "benchmark": (("evaluate", "intent", "smaple"), 4, "smaple", "unknown key"),
    "statistic": (("gates", "intent", "statistic"), "mcnemer", "statistic", "unknown statistic 'mcnemer'"),
    "parity check": (("parity", "checks", "template"), "templat", "template", "unknown parity_check 'templat'"),
    "reporter": (("report", 0), "jsn", "jsn", "unknown reporter 'jsn'"),
    "backend": (("model",), {"source": "smollm2-135m-instruct", "backend": "hff"}, "model", "unknown backend 'hff'"),
    "model": (("model",), "no/such/model", "model", "use a model folder with config.json or an embedded model"),
}


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip().lstrip("- ")
        if stripped.startswith(f"{key}:") or stripped == key:
            return number
    raise AssertionError(f"{key!r} is not in the suite")


@pytest.mark.parametrize("slot", sorted(BAD_SLOTS))
def test_a_bad_option_in_any_slot_fails_validate_before_any_work(slot, harness_write_suite, tmp_path, capsys):
    where, value, key, says = BAD_SLOTS[slot]
    data = copy.deepcopy(BASE)
    _set(data, where, value)
    path = harness_write_suite(data)
    text = path.read_text()

    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert f"{path}:{_line_of(text, key)}" in err, err
    # `harness run` stops at the same plan: nothing is curated, trained or evaluated
    store = tmp_path / "store"
    assert main(["run", str(path), "--store", str(store), "--reports", str(tmp_path / "reports")]) == 2
    assert says in capsys.readouterr().err
    assert not (store / "artifacts").exists() and not (tmp_path / "reports").exists()


def test_every_problem_is_reported_at_once(harness_write_suite, harness_registries, tmp_path):
    data = copy.deepcopy(BASE)
    for slot in ("statistic", "reporter", "trainer", "data path"):
        where, value, _key, _says = BAD_SLOTS[slot]
        _set(data, where, value)
    from harness.suite.config import load_suite

    with pytest.raises(PlanError) as info:
        plan_run(load_suite(harness_write_suite(data)), harness_registries, tmp_path / "work")
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 4, messages
    for slot in ("statistic", "reporter", "trainer", "data path"):
        assert any(BAD_SLOTS[slot][3] in m for m in messages), slot
    assert info.value.exit_code == 2


def test_a_valid_suite_plans_every_component_once(harness_write_suite, harness_registries, tmp_path):
    from harness.suite.config import load_suite

    plan = plan_run(load_suite(harness_write_suite(copy.deepcopy(BASE))), harness_registries, tmp_path / "work")
    assert plan.trainer is not None and plan.trainer.name == "lora"
    assert set(plan.compared) == {"full"} and set(plan.probes) == {"domain", "mmlu"}
    assert [g.name for g in plan.gates] == ["intent"] and plan.gates[0].statistic == "mcnemar"
    assert {"mcnemar", "paired_bootstrap"} <= set(plan.statistics)
    assert plan.curate is not None and [s.filter.name for s in plan.curate.filters] == ["exact_dedup"]
    assert plan.parity is not None and set(plan.parity.checks) == {"template"} and len(plan.parity.requests) == 4
    assert [r.name for r in plan.reporters] == ["json"]


def test_a_trainers_mitigation_data_is_checked_by_the_plan(harness_write_suite, harness_registries, tmp_path):
    from harness.suite.config import load_suite

    data = copy.deepcopy(BASE)
    data["train"]["replay"] = {"data": {"path": "${data}/wikitext2/nope.txt", "format": "text"}, "fraction": 0.2}
    path = harness_write_suite(data)
    with pytest.raises(HarnessError) as info:
        plan_run(load_suite(path), harness_registries, tmp_path / "work")
    assert "nope.txt" in str(info.value) and f"{path}:" in str(info.value)


@pytest.fixture(autouse=True)
def _no_cwd_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


class _ChatOnlyBackend:
    """A plugin whose backend generates but offers no log-likelihoods (a chat-only endpoint)."""

    @staticmethod
    def _backend():
        from harness.lib.model_api import Capabilities
        from harness.plugin.components import Backend, ComponentConfig

        class ChatOnly(Backend):
            name = "chat_only"
            description = "generation only"
            Config = ComponentConfig
            capabilities = Capabilities(loglikelihood=False)

        return ChatOnly

    @classmethod
    def plugin(cls):
        import harness

        class Plugin:
            @harness.hookimpl
            def harness_register_backends(self, registrar) -> None:
                registrar.add(cls._backend())

        return Plugin()


def test_a_loglikelihood_benchmark_on_a_backend_without_them_is_a_plan_error(harness_write_suite, tmp_path):
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries
    from harness.suite.config import load_suite

    data = {
        "name": "caps",
        "model": {"source": "smollm2-135m-instruct", "backend": "chat_only"},
        "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 1}, "intent": {"name": "support_intent", "sample": 4}},
        "report": ["json"],
    }
    path = harness_write_suite(data)
    pm = get_plugin_manager(load_entrypoints=False, plugins=[("chat-only", _ChatOnlyBackend.plugin())])
    with pytest.raises(HarnessError) as info:
        plan_run(load_suite(path), Registries.from_plugin_manager(pm), tmp_path / "work")
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "benchmark 'mmlu' needs loglikelihood, which backend 'chat_only' does not provide" in message
    assert f"{path}:{_line_of(path.read_text(), 'mmlu')}" in message
    assert "support_intent" not in message  # generation is offered: no complaint


def test_an_endpoint_backend_without_its_api_key_fails_validate(harness_write_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_DEPLOY_KEY", raising=False)
    options = {"url": "http://127.0.0.1:9/v1", "served_model": "m", "api_key_env": "HARNESS_TEST_DEPLOY_KEY"}
    path = harness_write_suite({
        "name": "endpoint",
        "model": {"source": "smollm2-135m-instruct", "backend": "openai", "backend_options": options},
        "evaluate": {"intent": {"name": "support_intent", "sample": 4}},
        "report": ["json"],
    })  # fmt: skip
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "HARNESS_TEST_DEPLOY_KEY" in err and "not set" in err and len(err.splitlines()) == 1, err
    monkeypatch.setenv("HARNESS_TEST_DEPLOY_KEY", "sk-test")
    assert main(["validate", str(path)]) == 0
