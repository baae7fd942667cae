"""docs/plugins.md is generated from the hook specifications and component base classes; it must
be current and every hook must say when it is called."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from harness.plugin import hookspecs
from harness.tools import plugin_reference


@pytest.mark.parametrize("name", ["plugins.md", "writing-plugins.md"])
def test_the_committed_pages_are_current(name: str) -> None:
    committed = (plugin_reference.DOCS / name).read_text(encoding="utf-8")
    assert committed == plugin_reference.pages()[name], f"docs/{name} is stale: run python -m harness.tools.plugin_reference"


def test_the_guide_has_a_worked_example_of_every_kind() -> None:
    from harness.tools.scaffold import KINDS

    guide = plugin_reference.render_guide()
    for kind, spec in KINDS.items():
        assert f"`--kind {kind}`" in guide and f"def {spec.hook}(" in guide
    assert "score_continuations(model, pairs)" in guide  # the benchmark example calls the model


def test_every_hook_and_base_class_is_in_the_reference() -> None:
    text = plugin_reference.render()
    for func in plugin_reference.hook_functions():
        assert f"### `{func.__name__}`" in text and inspect.getdoc(func).splitlines()[0] in text
    from harness.plugin.registry import COMPONENT_KINDS

    for cls in COMPONENT_KINDS.values():
        assert f"### `{cls.__name__}(" in text


def test_every_hook_has_a_docstring() -> None:
    assert plugin_reference.undocumented_hooks() == []


def test_an_undocumented_hook_is_reported_and_makes_the_page_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def harness_on_something(event: object) -> None:
        pass

    harness_on_something.__code__ = harness_on_something.__code__.replace(co_firstlineno=10_000)
    monkeypatch.setattr(hookspecs, "harness_on_something", harness_on_something, raising=False)
    assert plugin_reference.undocumented_hooks() == ["harness_on_something"]
    for name in ("plugins.md", "writing-plugins.md"):
        (tmp_path / name).write_text((plugin_reference.DOCS / name).read_text(encoding="utf-8"))
    assert plugin_reference.main(["--check", "--docs", str(tmp_path)]) == 1
    assert plugin_reference.main(["--docs", str(tmp_path)]) == 0
    page = (tmp_path / "plugins.md").read_text()
    assert "### `harness_on_something`" in page and plugin_reference.main(["--check", "--docs", str(tmp_path)]) == 0
