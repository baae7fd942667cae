"""Gate rules as written in suites: ``non_inferior(margin=0.02)``, ``superior()``,
``no_regression(margin=0.05)``; see ``harness.stages.gate`` for what each decides."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from harness.errors import ConfigError

RuleKind = Literal["non_inferior", "superior", "no_regression"]


_RULE_RE = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


_ARGS = {"non_inferior": {"margin"}, "superior": {"margin"}, "no_regression": {"margin"}}


@dataclass(frozen=True)
class Rule:
    kind: RuleKind
    margin: float

    def __str__(self) -> str:
        return f"{self.kind}(margin={self.margin:g})"


def parse_rule(text: str) -> Rule:
    """Parse ``non_inferior(margin=0.02)``; only known rules and numeric arguments."""
    match = _RULE_RE.match(text)
    if not match or match.group(1) not in _ARGS:
        known = ", ".join(f"{k}(margin=...)" for k in _ARGS)
        raise ConfigError(f"unknown gate rule {text!r}; available: {known}")
    kind, arg_text = match.group(1), match.group(2).strip()
    args: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in arg_text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _ARGS[kind]:
            raise ConfigError(f"gate rule {text!r}: unknown argument {part!r}")
        try:
            args[key] = float(value)
        except ValueError:
            raise ConfigError(f"gate rule {text!r}: {key} must be a number") from None
    margin = args.get("margin", 0.02 if kind == "non_inferior" else 0.0)
    if margin < 0:
        raise ConfigError(f"gate rule {text!r}: margin must not be negative")
    return Rule(cast(RuleKind, kind), margin)  # one of _ARGS, checked above
