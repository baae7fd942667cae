"""Typed component registries, filled by the register hooks.

Each kind of component (reader, filter, trainer, ...) has one registry.  Registration goes
through a ``Registrar`` bound to the calling plugin, so every component remembers which plugin and
distribution contributed it; the registry rejects name collisions and wrong types, and an unknown
name is an error that lists the known ones (never a silent ``None``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pluggy
from pydantic import ValidationError

from harness.errors import ConfigError, PluginError, UnknownComponentError
from harness.plugin.identity import BUILTIN_DISTRIBUTION
from harness.plugin.components import (
    Backend,
    Benchmark,
    Component,
    Filter,
    Reader,
    Reporter,
    RunContext,
    Statistic,
    Trainer,
)
from harness.plugin.parity import ParityCheck


C = TypeVar("C", bound=Component)


def narrow(component: Component, cls: type[C]) -> C:
    """``component`` as the base class of its kind (a ``ConfigError`` if it is not one): the
    registry admits only subclasses of a kind's base, so this is the type checker's guard."""
    if not isinstance(component, cls):
        raise ConfigError(f"{component.name!r} is not a {cls.__name__}")
    return component


class PluginSource(Protocol):
    """What registration needs of a plugin manager (``harness.plugin.manager`` provides it);
    a protocol, so that the registry does not import the manager that imports it."""

    @property
    def hook(self) -> pluggy.HookRelay: ...

    strict: bool
    skipped: list[str]

    def distribution_of(self, plugin_name: str) -> str: ...


COMPONENT_KINDS: dict[str, type[Component]] = {
    "reader": Reader,
    "filter": Filter,
    "trainer": Trainer,
    "benchmark": Benchmark,
    "statistic": Statistic,
    "backend": Backend,
    "parity_check": ParityCheck,
    "reporter": Reporter,
}

REGISTER_HOOKS: dict[str, str] = {
    "reader": "harness_register_readers",
    "filter": "harness_register_filters",
    "trainer": "harness_register_trainers",
    "benchmark": "harness_register_benchmarks",
    "statistic": "harness_register_statistics",
    "backend": "harness_register_backends",
    "parity_check": "harness_register_parity_checks",
    "reporter": "harness_register_reporters",
}
"""Which register hook fills which component registry."""


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component and its origin."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str
    distribution: str

    @property
    def origin(self) -> str:
        return f"{self.plugin} ({self.distribution})"


class Registry:
    """All components of one kind, by unique name."""

    def __init__(self, kind: str, base: type[Component]) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, ComponentInfo] = {}

    def add(self, cls: type[Component], *, plugin: str, distribution: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {plugin!r} ({distribution}) registered {cls!r} as a {self.kind}, "
                f"but it is not a subclass of {self.base.__name__}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin!r} ({distribution}) registered {cls.__name__} without a name"
            )
        if name in self._items:
            first = self._items[name]
            raise PluginError(
                f"{self.kind} name {name!r} from plugin {plugin!r} ({distribution}) collides "
                f"with the one from {first.origin}"
            )
        self._items[name] = ComponentInfo(self.kind, name, cls, plugin, distribution)

    def get(self, name: str) -> ComponentInfo:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; available: {known}"
            ) from None

    def discard_plugin(self, plugin: str) -> None:
        """Forget every component that ``plugin`` registered (it failed part-way)."""
        self._items = {name: info for name, info in self._items.items() if info.plugin != plugin}

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[ComponentInfo]:
        return iter(sorted(self._items.values(), key=lambda i: i.name))

    def __contains__(self, name: object) -> bool:
        return name in self._items


class Registrar:
    """The object a register hook receives: ``registrar.add(MyComponent)``."""

    def __init__(self, registry: Registry, plugin: str, distribution: str) -> None:
        self._registry = registry
        self.plugin = plugin
        self.distribution = distribution

    def add(self, cls: type[Component]) -> None:
        self._registry.add(cls, plugin=self.plugin, distribution=self.distribution)


class Registries:
    """One registry per component kind, filled from a plugin manager."""

    def __init__(self) -> None:
        self.by_kind: dict[str, Registry] = {
            kind: Registry(kind, base) for kind, base in COMPONENT_KINDS.items()
        }

    def __getitem__(self, kind: str) -> Registry:
        return self.by_kind[kind]

    def get(self, kind: str, name: str) -> ComponentInfo:
        return self.by_kind[kind].get(name)

    def build(self, kind: str, name: str, options: Mapping[str, Any], ctx: RunContext) -> Component:
        """Construct the ``kind`` component ``name`` with ``options`` validated by its config;
        a bad option is a ``ConfigError`` naming the component and the plugin it came from."""
        info = self.get(kind, name)
        try:
            config = info.cls.Config.model_validate(dict(options))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise ConfigError(f"{kind} {name!r} from {info.origin}: {where}: {first['msg']}") from None
        return info.cls(config, ctx)

    def all(self) -> Iterator[ComponentInfo]:
        for registry in self.by_kind.values():
            yield from registry

    @classmethod
    def from_plugin_manager(cls, pm: PluginSource) -> Registries:
        """Call every register hook implementation, one plugin at a time, so that an error
        is attributed to the plugin that raised it.  A third-party plugin that fails is an error
        when ``pm.strict``; otherwise all its components are left out and ``pm.skipped`` says so."""
        registries = cls()
        failed: set[str] = set()
        for kind, hook_name in REGISTER_HOOKS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order: built-ins first
                plugin = impl.plugin_name
                if plugin in failed:
                    continue
                dist = pm.distribution_of(plugin)
                try:
                    impl.function(registrar=Registrar(registries[kind], plugin, dist))
                except Exception as exc:
                    message = str(exc) if isinstance(exc, PluginError) else (
                        f"plugin {plugin!r} ({dist}) failed in {hook_name}: {type(exc).__name__}: {exc}"
                    )
                    if pm.strict or dist == BUILTIN_DISTRIBUTION:
                        hint = "" if dist == BUILTIN_DISTRIBUTION else f"; disable it with HARNESS_DISABLE_PLUGINS={plugin}"
                        raise PluginError(message + hint) from exc
                    failed.add(plugin)
                    for registry in registries.by_kind.values():
                        registry.discard_plugin(plugin)
                    pm.skipped.append(f"{message}; skipped (--strict-plugins makes this an error)")
        return registries
