"""The plugin manager factory.

Built-in plugins and third-party plugins (entry-point group ``harness``) are registered by the
same manager in the same way.  Entry points are loaded one by one so that a broken plugin is named
in the error; ``HARNESS_DISABLE_PLUGINS`` (comma-separated plugin names) or ``block=`` skips any of
them, built-ins included.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable

import pluggy

from harness import PROJECT_NAME
from harness.plugin import hookspecs
from harness.errors import PluginError
from harness.plugin.identity import BUILTIN_DISTRIBUTION

DEFAULT_PLUGINS: tuple[str, ...] = (
    "harness_plugins.readers.formats",
    "harness_plugins.readers.tabular",
    "harness_plugins.filters.basic",
    "harness_plugins.filters.near_dedup",
    "harness_plugins.filters.content",
    "harness_plugins.filters.format",
    "harness_plugins.filters.decontam",
    "harness_plugins.filters.perplexity",
    "harness_plugins.filters.quality",
    "harness_plugins.backends.hf",
    "harness_plugins.backends.openai",
    "harness_plugins.backends.vllm_inproc",
    "harness_plugins.trainers.lora",
    "harness_plugins.trainers.full",
    "harness_plugins.benchmarks.mmlu",
    "harness_plugins.benchmarks.support_intent",
    "harness_plugins.benchmarks.hellaswag",
    "harness_plugins.benchmarks.perplexity",
    "harness_plugins.benchmarks.humaneval",
    "harness_plugins.benchmarks.lmeval_task",
    "harness_plugins.statistics.paired",
    "harness_plugins.parity.template",
    "harness_plugins.parity.sampling",
    "harness_plugins.parity.preprocessing",
    "harness_plugins.parity.postprocessing",
    "harness_plugins.parity.traffic",
    "harness_plugins.parity.replay",
    "harness_plugins.reporters.terminal",
    "harness_plugins.reporters.files",
    "harness_plugins.reporters.curve",
    "harness_plugins.reporters.html",
    "harness_plugins.reporters.markdown",
)
"""Built-in plugin modules, registered under their module name."""

ESSENTIAL_PLUGINS: dict[str, str] = {
    "harness_plugins.statistics.paired": "the paired statistics every gate and the forgetting curve decide with",
}
"""Built-ins that cannot be blocked: without them no verdict could be reached at all."""

DISABLE_ENV = "HARNESS_DISABLE_PLUGINS"


class HarnessPluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers which distribution each plugin came from, whether a
    broken third-party plugin is an error (``strict``) or skipped, and what it skipped."""

    def __init__(self, strict: bool = True) -> None:
        super().__init__(PROJECT_NAME)
        self._distributions: dict[str, str] = {}
        self.strict = strict
        self.skipped: list[str] = []
        """One line per third-party plugin left out because it failed to import or register."""

    def skip_or_raise(self, name: str, message: str) -> None:
        """A broken third-party plugin: an error when strict, else left out with a warning line.
        Built-ins are never skipped (they ship with the harness: a failure there is a bug)."""
        if self.strict or self._distributions.get(name) == BUILTIN_DISTRIBUTION:
            raise PluginError(f"{message}; disable it with {DISABLE_ENV}={name}")
        if self.has_plugin(name):
            self.unregister(name=name)
        self.skipped.append(f"{message}; skipped (--strict-plugins makes this an error)")

    def register_from(self, plugin: object, name: str, distribution: str) -> None:
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} ({distribution}): {exc}") from exc
        self._distributions[name] = distribution

    def distribution_of(self, plugin_name: str) -> str:
        return self._distributions.get(plugin_name, "unknown distribution")


def _blocked(block: Iterable[str]) -> set[str]:
    names = set(block)
    names.update(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())
    return names


def get_plugin_manager(
    load_entrypoints: bool = True,
    block: Iterable[str] = (),
    plugins: Iterable[tuple[str, object]] = (),
    strict: bool = True,
) -> HarnessPluginManager:
    """Build a plugin manager: specs, built-ins, ``plugins`` (name, object) given by an embedding
    program or a test, entry points, then ``check_pending()`` so that a misspelled hook
    implementation fails at start-up.  Each call builds a fresh manager.

    With ``strict=False`` an entry point that fails to import, or whose hooks do not match the
    specification, is left out and named in ``pm.skipped`` instead of stopping every command."""
    blocked = _blocked(block)
    for name in sorted(blocked & ESSENTIAL_PLUGINS.keys()):
        raise PluginError(f"plugin {name!r} cannot be blocked: it provides {ESSENTIAL_PLUGINS[name]}")
    pm = HarnessPluginManager(strict)
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        if module_name in blocked:
            continue
        pm.register_from(importlib.import_module(module_name), module_name, BUILTIN_DISTRIBUTION)
    for name, plugin in plugins:
        if name not in blocked:
            pm.register_from(plugin, name, "given in-process")
    if load_entrypoints:
        for ep in importlib.metadata.entry_points(group=PROJECT_NAME):
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
            try:
                plugin = ep.load()
                pm.register_from(plugin, ep.name, dist)
            except Exception as exc:
                problem = exc if isinstance(exc, PluginError) else f"failed to import: {type(exc).__name__}: {exc}"
                message = str(problem) if isinstance(problem, PluginError) else f"plugin {ep.name!r} ({dist}) {problem}"
                pm.skip_or_raise(ep.name, message)
    while True:
        try:
            pm.check_pending()
            return pm
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            pm.skip_or_raise(name, f"plugin {name!r} ({pm.distribution_of(name)}): {exc}")
