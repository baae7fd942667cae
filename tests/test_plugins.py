"""The plugin core: built-ins and third-party plugins go through one manager and one registry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import harness
from harness.plugin.components import Filter, FilterResult, Trainer
from harness.errors import PluginError, UnknownComponentError
from harness.plugin.manager import BUILTIN_DISTRIBUTION, DEFAULT_PLUGINS, get_plugin_manager
from harness.plugin.registry import Registries, Registry
from harness.types import Conversation, Message

FIXTURE = Path(__file__).parent / "fixtures" / "example_plugin"


class _Keep(Filter):
    name = "keep_all"

    def apply(self, records: Sequence) -> FilterResult:
        return FilterResult(list(records), [])


def test_builtins_are_registered_with_their_origin(harness_registries: Registries) -> None:
    expected = {
        "reader": {"alpaca", "sharegpt", "messages", "openai_requests", "csv", "auto", "parquet", "hf_disk"},
        "filter": {"exact_dedup", "min_response_length", "pii", "repetition", "language", "format_check", "decontaminate", "near_dedup", "perplexity_outliers", "quality_classifier"},
        "trainer": {"lora", "full", "full_fsdp", "full_deepspeed"},
        "benchmark": {"mmlu", "support_intent", "humaneval", "hellaswag", "perplexity", "lm_eval_task"},
        "statistic": {"mcnemar", "paired_bootstrap"},
        "backend": {"hf", "openai", "vllm", "vllm_server"},
        "reporter": {"terminal", "json", "junit", "curve", "html", "markdown"},
        "parity_check": {"template", "sampling", "preprocessing", "postprocessing", "traffic_shift", "replay"},
    }
    for kind, names in expected.items():
        assert set(harness_registries[kind].names()) == names
    lora = harness_registries.get("trainer", "lora")
    assert lora.plugin == "harness_plugins.trainers.lora"
    assert lora.distribution == BUILTIN_DISTRIBUTION


def test_registry_rejects_collisions_wrong_types_and_unknown_names() -> None:
    registry = Registry("filter", Filter)
    registry.add(_Keep, plugin="first", distribution="a 1.0")
    with pytest.raises(PluginError, match=r"'keep_all' from plugin 'second' \(b 2.0\) collides with .*first"):
        registry.add(_Keep, plugin="second", distribution="b 2.0")
    with pytest.raises(PluginError, match="not a subclass of Filter"):
        registry.add(Trainer, plugin="third", distribution="c 3.0")
    with pytest.raises(UnknownComponentError, match="unknown filter 'keep'; available: keep_all"):
        registry.get("keep")


class _Colliding:
    @harness.hookimpl
    def harness_register_filters(self, registrar) -> None:
        from harness_plugins.filters.basic import ExactDedup

        registrar.add(ExactDedup)


class _Raising:
    @harness.hookimpl
    def harness_register_trainers(self, registrar) -> None:
        raise RuntimeError("boom")


class _Misspelled:
    @harness.hookimpl
    def harness_register_filtres(self, registrar) -> None:  # typo on purpose
        pass


def test_plugin_errors_name_the_plugin() -> None:
    pm = get_plugin_manager(load_entrypoints=False, plugins=[("colliding", _Colliding())])
    with pytest.raises(PluginError, match="'exact_dedup' from plugin 'colliding'"):
        Registries.from_plugin_manager(pm)
    pm = get_plugin_manager(load_entrypoints=False, plugins=[("raising", _Raising())])
    with pytest.raises(PluginError, match="plugin 'raising' .* failed in harness_register_trainers: RuntimeError: boom"):
        Registries.from_plugin_manager(pm)
    with pytest.raises(PluginError, match="plugin 'misspelled'.*harness_register_filtres"):
        get_plugin_manager(load_entrypoints=False, plugins=[("misspelled", _Misspelled())])


def test_any_plugin_can_be_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = get_plugin_manager(load_entrypoints=False, block=["harness_plugins.filters.basic"])
    assert Registries.from_plugin_manager(pm)["filter"].names() == ["decontaminate", "format_check", "language", "near_dedup", "perplexity_outliers", "pii", "quality_classifier", "repetition"]
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "harness_plugins.trainers.lora")
    pm = get_plugin_manager(load_entrypoints=False)
    assert "lora" not in Registries.from_plugin_manager(pm)["trainer"]
    assert len(pm.get_plugins()) == len(DEFAULT_PLUGINS) - 1


def test_blocking_a_plugin_removes_its_components_everywhere(harness_write_suite, capsys, monkeypatch) -> None:
    """A blocked benchmark plugin is gone for a suite that names it, and for the filter that
    reads its items through the registries."""
    from harness.cli import main
    from harness.plugin.components import RunContext

    suite = harness_write_suite({"name": "b", "model": "smollm2-135m-instruct", "evaluate": {"m": {"name": "mmlu"}}})
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "harness_plugins.benchmarks.mmlu")
    assert main(["validate", str(suite)]) == 2
    assert "unknown benchmark 'mmlu'" in capsys.readouterr().err
    registries = Registries.from_plugin_manager(get_plugin_manager(load_entrypoints=False))
    decontaminate = registries.build("filter", "decontaminate", {"against": ["mmlu"]}, RunContext(suite.parent, suite.parent, builder=registries))
    record = Conversation((Message("user", "hi"), Message("assistant", "hello")), "x:1")
    with pytest.raises(UnknownComponentError, match="unknown benchmark 'mmlu'"):
        decontaminate.apply([record])


def test_essential_plugins_cannot_be_blocked() -> None:
    with pytest.raises(PluginError, match="'harness_plugins.statistics.paired' cannot be blocked"):
        get_plugin_manager(load_entrypoints=False, block=["harness_plugins.statistics.paired"])


# ------------------------------------------------------------------ a real third-party package


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example plugin package for real (into its own target folder)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(FIXTURE)],
        check=True,
        cwd=build,
    )
    assert list(target.glob("harness_example_plugin-1.0.0.dist-info/entry_points.txt"))
    return target


def _harness(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=environ
    )


def test_third_party_plugin_is_discovered_and_usable(installed_plugin: Path, harness_write_suite, tmp_path: Path) -> None:
    listing = _harness(["plugins"], installed_plugin)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "max_prompt_chars" in line)
    assert "filter" in row and "example" in row and "harness-example-plugin 1.0.0" in row

    data = tmp_path / "chat.jsonl"
    data.write_text(
        '{"instruction": "short", "output": "fine answer"}\n'
        '{"instruction": "' + "x" * 50 + '", "output": "another answer"}\n'
    )
    suite = harness_write_suite(
        {
            "name": "third-party",
            "model": "smollm2-135m-instruct",
            "data": [{"path": str(data), "format": "alpaca"}],
            "curate": {"filters": [{"name": "max_prompt_chars", "max_chars": 20}]},
        }
    )
    out = tmp_path / "curated"
    run = _harness(["curate", str(suite), "--out", str(out)], installed_plugin)
    assert run.returncode == 0, run.stderr
    assert "filter max_prompt_chars: in 2 = kept 1 + dropped 1 + quarantined 0 (prompt_too_long: 1)" in run.stdout
    assert len((out / "curated.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("how", ["import", "register", "hook"])
def test_a_broken_third_party_plugin_is_skipped_with_a_warning_or_fails_when_strict(installed_plugin: Path, how: str) -> None:
    """Off CI a broken entry point (it fails to import, raises while registering, or implements a
    hook with no specification) is left out with one warning line naming it; the built-ins keep
    working.  ``--strict-plugins`` (the default when ``CI`` is set) makes it an error."""
    lenient = _harness(["plugins"], installed_plugin, HARNESS_EXAMPLE_PLUGIN_BREAK=how, CI="")
    assert lenient.returncode == 0, lenient.stderr
    warning = lenient.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("harness: warning: plugin 'example'"), warning
    assert "harness-example-plugin 1.0.0" in warning[0] and "skipped" in warning[0]
    assert "max_prompt_chars" not in lenient.stdout and "exact_dedup" in lenient.stdout
    for strict in (["--strict-plugins", "plugins"], ["plugins"]):
        env = {"HARNESS_EXAMPLE_PLUGIN_BREAK": how, "CI": "true" if strict == ["plugins"] else ""}
        broken = _harness(strict, installed_plugin, **env)
        assert broken.returncode == 2
        lines = broken.stderr.strip().splitlines()
        assert len(lines) == 1 and "plugin 'example' (harness-example-plugin 1.0.0)" in lines[0], lines
        assert "HARNESS_DISABLE_PLUGINS=example" in lines[0]
    skipped = _harness(["--strict-plugins", "plugins"], installed_plugin, HARNESS_EXAMPLE_PLUGIN_BREAK=how, HARNESS_DISABLE_PLUGINS="example")
    assert skipped.returncode == 0 and "max_prompt_chars" not in skipped.stdout


def test_a_run_goes_on_past_a_broken_plugin_unless_strict(installed_plugin: Path, harness_write_suite, tmp_path: Path, harness_tiny_model_dir: Path) -> None:
    suite = harness_write_suite(
        {"name": "past-broken", "model": str(harness_tiny_model_dir), "evaluate": {"intent": {"name": "support_intent", "sample": 2}}}
    )
    args = ["run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")]
    lenient = _harness(args, installed_plugin, HARNESS_EXAMPLE_PLUGIN_BREAK="import", CI="")
    assert lenient.returncode == 0, lenient.stderr
    assert lenient.stderr.startswith("harness: warning: plugin 'example'")
    assert "intent / baseline" in lenient.stdout
    strict = _harness(["--strict-plugins", *args], installed_plugin, HARNESS_EXAMPLE_PLUGIN_BREAK="import")
    assert strict.returncode == 2 and "failed to import" in strict.stderr
