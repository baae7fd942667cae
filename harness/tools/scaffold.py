"""Plugin package scaffolding: renders the templates of a plugin package of each kind.

The templates (``harness/tools/templates/plugin``, package data) hold a small, working example of
each kind; ``harness new-plugin`` writes them as a package, and ``docs/writing-plugins.md`` shows
them, rendered by the same code, so the documented example is the generated one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from harness.errors import ConfigError

TEMPLATES = Path(__file__).parent / "templates" / "plugin"


@dataclass(frozen=True)
class Kind:
    """What differs between the kinds of plugin a package can start as."""

    registry: str
    hook: str
    title: str
    suite: str


KINDS: dict[str, Kind] = {
    "filter": Kind("filter", "harness_register_filters", "curation filter",
                   "curate:\n  filters:\n    - {name: COMPONENT, words: [lorem ipsum]}"),
    "benchmark": Kind("benchmark", "harness_register_benchmarks", "benchmark",
                      "evaluate:\n  quiz: COMPONENT\ngates:\n  quiz: non_inferior(margin=0.05)"),
    "trainer": Kind("trainer", "harness_register_trainers", "trainer",
                    "train:\n  name: COMPONENT\n  steps: 20"),
    "reporter": Kind("reporter", "harness_register_reporters", "reporter", "report: [terminal, COMPONENT]"),
    "parity": Kind("parity_check", "harness_register_parity_checks", "parity check",
                   "parity:\n  requests: {path: requests.jsonl, format: openai_requests}\n  checks:\n    length: COMPONENT"),
    "backend": Kind("backend", "harness_register_backends", "model backend",
                    "model:\n  source: smollm2-135m-instruct\n  backend: COMPONENT"),
}

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def context(name: str, kind: str) -> dict[str, str]:
    """The template variables for package ``name`` of ``kind``."""
    if not _NAME.match(name):
        raise ConfigError(f"new-plugin: {name!r} is not a package name (lower case letters, digits, '-' or '_')")
    module = name.replace("-", "_")
    component = module.removeprefix("harness_") or module
    spec = KINDS[kind]
    return {
        "dist": name,
        "module": module,
        "component": component,
        "class_name": "".join(part.capitalize() for part in component.split("_")),
        "kind": kind,
        "kind_title": spec.title,
        "registry_kind": spec.registry.replace("_", " "),
        "hook": spec.hook,
        "description": f"A {spec.title} for the finetune harness: {component}.",
        "suite_example": spec.suite.replace("COMPONENT", component),
    }


def generate(name: str, kind: str, parent: Path) -> Path:
    """Write the package ``name`` of ``kind`` as ``parent/name``; an existing folder is an error."""
    context(name, kind)  # validates the name and kind before anything is written
    folder = parent / name
    if folder.exists():
        raise ConfigError(f"new-plugin: {folder} already exists; choose another name or --dir")
    for relative, text in render(name, kind).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def render(name: str, kind: str) -> dict[str, str]:
    """The files of package ``name`` of ``kind``: relative path -> text."""
    values = context(name, kind)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, autoescape=False,
    )
    files = {
        "pyproject.toml": "pyproject.toml.j2",
        "README.md": "README.md.j2",
        f"{values['module']}/__init__.py": f"{kind}.py.j2",
        f"tests/test_{values['component']}.py": f"test_{kind}.py.j2",
    }
    return {relative: env.get_template(template).render(values) for relative, template in files.items()}
