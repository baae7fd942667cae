"""Safe YAML loading that remembers the line of every key, so errors can name ``file:line``.

Loading is strict: a key written twice in the same mapping is an error naming both lines (the
YAML loaders silently keep the last one, so ``seed: 1`` then ``seed: 2`` would run seed 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.types import Loc as Loc  # re-exported: suites speak of locations


class Positions:
    """Line numbers (1-based) of mapping keys and sequence items, by their path in the data."""

    def __init__(self, path: Path, lines: dict[Loc, int]) -> None:
        self.path = path
        self._lines = lines

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self._lines:
                return self._lines[loc]
            loc = loc[:-1]
        return 1

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line(loc)}"


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                name = str(key_node.value)
                if name in seen:
                    raise ConfigError(
                        f"{path}:{line}: duplicate key {_dotted(loc + (name,))!r} "
                        f"(first at line {seen[name]}); keep one of them"
                    )
                seen[name] = line
            key = loc + (str(key_node.value),)
            lines[key] = line
            _walk(value_node, key, lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[loc + (index,)] = item.start_mark.line + 1
            _walk(item, loc + (index,), lines, path)


def load_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse ``path`` with the safe loader (no code execution) and return data and positions."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{line}: invalid YAML: {problem}") from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines, path)
    return data, Positions(path, lines)
