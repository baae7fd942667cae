"""``harness new-plugin NAME --kind KIND``: generate a plugin package to start from.

The package installs with pip, registers its component through the ``harness`` entry-point
group, and passes its own tests as generated: a module with the hook implementation and a typed
config, ``tests/`` using the ``harness.testing`` fixtures and contract checks, a README and a
``pyproject.toml``.  The templates are package data (``harness/cli/templates/plugin``), rendered
with jinja2.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from rich.console import Console

from harness.errors import ConfigError

NAME = "new-plugin"
HELP = "generate a plugin package (filter, benchmark, trainer, reporter, parity, backend) to start from"

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
                    "train:\n  trainer: {name: COMPONENT, steps: 20}"),
    "reporter": Kind("reporter", "harness_register_reporters", "reporter", "report: [terminal, COMPONENT]"),
    "parity": Kind("parity_check", "harness_register_parity_checks", "parity check",
                   "parity:\n  requests: {path: requests.jsonl, format: openai_requests}\n  checks:\n    length: COMPONENT"),
    "backend": Kind("backend", "harness_register_backends", "model backend",
                    "model:\n  source: smollm2-135m-instruct\n  backend: COMPONENT"),
}

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the package's name, e.g. 'harness-banned-words' (lower case, digits, - or _)")
    parser.add_argument("--kind", required=True, choices=sorted(KINDS), help="the component the package starts with")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to create the package's folder (default: here)")


def run(args: argparse.Namespace, console: Console) -> int:
    folder = generate(args.name, args.kind, args.dir)
    console.print(f"created {folder} ({args.kind} plugin); next: pip install -e {folder} && pytest {folder}")
    return 0


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
    values = context(name, kind)
    folder = parent / name
    if folder.exists():
        raise ConfigError(f"new-plugin: {folder} already exists; choose another name or --dir")
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
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(values), encoding="utf-8")
    return folder
