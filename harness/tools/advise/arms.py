"""The arms ``harness advise SUITE`` runs when it is not given a stored run.

The suite is read again as written and given the arms the rules compare, on the same held-out
items: the base model zero-shot (``base``, the suite's baseline), few-shot variants of it with
``k`` seeded training examples (``shots5``, ``shots20`` by default: ``{of: base, prompt: {shots:
k}}`` under ``models:``), and this run's LoRA (``trained``, the candidate).  A run evaluates the
arms its gates compare, so each few-shot arm gets an advisory (never blocking) gate against the
trained arm on the advised benchmark.  A harness whose suites have no ``models:`` block says so
in one line; the arms can then be run with ``harness run`` and advised with ``--run``.

Full fine-tuning is a second training, which one run's arms do not hold: with ``--full`` the
suite runs again with ``train: {name: full}`` and its candidate joins the advice as arm ``full``
(:func:`with_full_arm`), paired with the other arms on the same held-out items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from harness.errors import ConfigError, DataError
from harness.lib.refs import ComponentRef
from harness.suite.config import LoadedSuite, Suite, format_validation
from harness.suite.yamlpos import load_yaml

DEFAULT_SHOTS = (5, 20)
FULL = "full"


def arms_block(shots: Sequence[int] = DEFAULT_SHOTS) -> dict[str, Any]:
    """The ``models:`` arms advise adds (``base`` and ``trained`` are every training suite's own)."""
    return {f"shots{k}": {"of": "base", "prompt": {"shots": k}} for k in shots}


def arms_gates(arms: Sequence[str], benchmark: str) -> dict[str, Any]:
    """Advisory gates that make the run evaluate each arm: trained against it on ``benchmark``."""
    return {
        f"advise_{arm}": {"benchmark": benchmark, "rule": "non_inferior(margin=0.02)", "blocking": False,
                          "baseline": arm, "candidate": "trained"}
        for arm in arms
    }


def _revalidated(loaded: LoadedSuite, data: dict[str, Any], positions: Any) -> LoadedSuite:
    try:
        return LoadedSuite(Suite.model_validate(data), loaded.path, positions)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, positions, ())) from None


def _benchmark(loaded: LoadedSuite, benchmark: str | None) -> str:
    labels = list(loaded.suite.evaluate)
    if benchmark is not None and benchmark not in labels:
        raise ConfigError(f"{loaded.where(('evaluate',))}: no benchmark {benchmark!r} under 'evaluate'; available: {', '.join(labels) or 'none'}")
    if not labels:
        raise ConfigError(f"{loaded.path}: harness advise needs a benchmark under 'evaluate' to compare the arms on")
    return benchmark or labels[0]


def arms_suite(loaded: LoadedSuite, shots: Sequence[int] = DEFAULT_SHOTS, benchmark: str | None = None) -> LoadedSuite:
    """``loaded`` with the advise arms and their gates (in memory: nothing is written beside it)."""
    if "models" not in Suite.model_fields:
        raise ConfigError(
            f"{loaded.path}: harness advise without --run needs suite arms (a 'models:' block), which this "
            "harness does not have; run the arms with harness run, then harness advise SUITE --run RUN_ID"
        )
    if loaded.suite.train is None:
        raise ConfigError(f"{loaded.path}: harness advise needs a 'train' stage for the trained arm")
    label = _benchmark(loaded, benchmark)
    data, positions = load_yaml(loaded.path)
    added = arms_block(shots)
    data["models"] = {**added, **(data.get("models") or {})}
    data["gates"] = {**arms_gates(list(added), label), **(data.get("gates") or {})}
    return _revalidated(loaded, data, positions)


def full_train(train: ComponentRef | None) -> dict[str, Any]:
    """The full fine-tuning trainer with the suite trainer's shared training options (steps,
    batch, length, data mixing...), without its own (LoRA rank) or its learning rate (full
    fine-tuning keeps the full trainer's smaller default)."""
    from harness.lib.training.config import TrainingConfig

    shared = set(TrainingConfig.model_fields) - {"learning_rate"}
    options = train.options if train is not None else {}
    return {"name": FULL, **{k: v for k, v in options.items() if k in shared}}


def full_suite(loaded: LoadedSuite, benchmark: str | None = None) -> LoadedSuite:
    """``loaded`` trained with full fine-tuning instead, evaluating only the advised benchmark."""
    label = _benchmark(loaded, benchmark)
    data, positions = load_yaml(loaded.path)
    data["train"] = full_train(loaded.suite.train)
    data["evaluate"] = {label: data["evaluate"][label]}
    data["gates"] = {}
    data.pop("forgetting", None)
    data.pop("parity", None)
    return _revalidated(loaded, data, positions)


def with_full_arm(doc: Mapping[str, Any], full_doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with the candidate of the full fine-tuning run ``full_doc`` as arm ``full`` (its
    results on every benchmark both runs scored, and its training output)."""
    if not full_doc.get("train"):
        raise DataError(f"run {full_doc.get('run_id')}: no training output, so no full fine-tuning arm")
    benchmarks = {label: dict(per_arm) for label, per_arm in doc.get("benchmarks", {}).items()}
    shared = [label for label in benchmarks if "candidate" in full_doc.get("benchmarks", {}).get(label, {})]
    if not shared:
        raise DataError(f"run {full_doc.get('run_id')}: no candidate results on a benchmark of run {doc.get('run_id')}")
    for label in shared:
        benchmarks[label][FULL] = full_doc["benchmarks"][label]["candidate"]
    arms = {**doc.get("arms", {}), FULL: {"kind": "full", "run": full_doc.get("run_id")}}
    return {**doc, "benchmarks": benchmarks, "arms": arms,
            "compare_train": {**doc.get("compare_train", {}), FULL: full_doc["train"]}}
