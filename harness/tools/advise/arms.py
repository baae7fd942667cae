"""The arms ``harness advise SUITE`` runs when it is not given a stored run.

The suite is read again as written and given the arms the rules compare, on the same held-out
items: the base model zero-shot (``base``), few-shot variants of it with ``k`` seeded examples
(``shots5``, ``shots20`` by default), this run's LoRA (``trained``), and, when asked, full
fine-tuning (``full``).  Arms are a suite's ``models:`` block (name -> arm; a prompt variant is
``{of: base, prompt: {shots: k}}``); a harness whose suites have no ``models:`` block says so in
one line, and the arms can then be run with ``harness run`` and advised with ``--run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from harness.errors import ConfigError
from harness.suite.config import LoadedSuite, Suite, format_validation
from harness.suite.yamlpos import load_yaml

DEFAULT_SHOTS = (5, 20)


def arms_block(shots: Sequence[int] = DEFAULT_SHOTS, full: bool = False) -> dict[str, Any]:
    """The ``models:`` arms advise adds (``base`` and ``trained`` are every suite's own arms)."""
    models: dict[str, Any] = {f"shots{k}": {"of": "base", "prompt": {"shots": k}} for k in shots}
    if full:
        models["full"] = {"of": "base", "train": {"name": "full"}}
    return models


def arms_suite(loaded: LoadedSuite, shots: Sequence[int] = DEFAULT_SHOTS, full: bool = False) -> LoadedSuite:
    """``loaded`` with the advise arms added (in memory: nothing is written beside the suite)."""
    if "models" not in Suite.model_fields:
        raise ConfigError(
            f"{loaded.path}: harness advise without --run needs suite arms (a 'models:' block), which this "
            "harness does not have; run the arms with harness run, then harness advise SUITE --run RUN_ID"
        )
    data, positions = load_yaml(loaded.path)
    if loaded.suite.train is None:
        raise ConfigError(f"{loaded.where(('train',))}: harness advise needs a 'train' stage for the trained arm")
    data["models"] = {**arms_block(shots, full), **(data.get("models") or {})}
    try:
        return LoadedSuite(Suite.model_validate(data), loaded.path, positions)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, positions, ())) from None
