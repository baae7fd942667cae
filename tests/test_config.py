"""Suite loading: every error names ``file:line`` and the key; ``harness validate`` reports it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.plugin.components import RunContext
from harness.run.plan import build_component
from harness.suite.config import load_suite
from harness.errors import ConfigError, UnknownComponentError

DEMO = Path(__file__).parents[1] / "suites" / "demo.yaml"

HEAD = "name: t\nmodel: smollm2-135m-instruct\n"

# Each bad suite, the line its error must name, and what the message must contain.
BAD_SUITES = {
    "top_level_typo": (
        HEAD + "evaluate:\n  intent: support_intent\ngatess:\n  intent: superior()\n",
        5,
        ["gatess", "unknown key"],
    ),
    "nested_typo": (HEAD + "gating:\n  alpha: 0.1\n  corection: none\n", 5, ["gating.corection", "unknown key"]),
    "bad_value": (HEAD + "gating:\n  alpha: 0.9\n", 4, ["gating.alpha", "less than 0.5"]),
    "missing_name": ("model: smollm2-135m-instruct\nseed: 3\n", 1, ["name", "required key is missing"]),
    "invalid_yaml": (HEAD + "evaluate:\n  intent: [support_intent\ngates: {}\n", 5, ["invalid YAML"]),
    "gate_without_benchmark": (
        HEAD + "evaluate:\n  intent: support_intent\ngates:\n  intent: superior()\n  mmlu: non_inferior()\n",
        7,
        ["gates.mmlu", "no benchmark 'mmlu'", "available: intent"],
    ),
    "gate_naming_other_benchmark": (
        HEAD + "evaluate:\n  intent: support_intent\ngates:\n  g:\n    rule: superior()\n    benchmark: intnet\n",
        6,
        ["gates.g", "no benchmark 'intnet'"],
    ),
    "bad_gate_rule": (
        HEAD + "evaluate:\n  intent: support_intent\ngates:\n  intent: better_than(margin=0.1)\n",
        6,
        ["gates.intent", "unknown gate rule"],
    ),
    "not_a_mapping": ("- just\n- a list\n", 1, ["must be a mapping"]),
    # Duplicate keys: YAML loaders keep the last one silently; here both lines are named.
    "duplicate_seed": (HEAD + "seed: 1\nseed: 2\n", 4, ["duplicate key 'seed'", "first at line 3"]),
    "duplicate_model": (HEAD + "model: /elsewhere\n", 3, ["duplicate key 'model'", "first at line 2"]),
    "duplicate_nested": (
        HEAD + "gating:\n  alpha: 0.1\n  alpha: 0.2\n", 5, ["duplicate key 'gating.alpha'", "first at line 4"]
    ),
    "duplicate_in_list_item": (
        HEAD + "data:\n  - path: a.jsonl\n    sample: 3\n    sample: 4\n",
        6,
        ["duplicate key 'data.0.sample'", "first at line 5"],
    ),
}


def _assert_names_line(message: str, path: Path, line: int, needles: list[str]) -> None:
    assert message.startswith(f"{path}:{line}:"), message
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_load_suite_errors_name_file_line_and_key(case, harness_write_suite):
    text, line, needles = BAD_SUITES[case]
    path = harness_write_suite(text)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    _assert_names_line(str(info.value), path, line, needles)


def test_load_suite_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: file not found")):
        load_suite(path)


def test_load_suite_valid(harness_write_suite):
    path = harness_write_suite(
        HEAD
        + "train:\n  name: lora\n  r: 4\n"
        + "evaluate:\n  intent:\n    name: support_intent\n    sample: 10\n"
        + "gates:\n  intent: superior(margin=0.01)\n"
    )
    suite = load_suite(path).suite
    assert suite.train.name == "lora" and suite.train.options == {"r": 4}
    assert suite.evaluate["intent"].options == {"sample": 10}
    assert suite.gates["intent"].rule == "superior(margin=0.01)"
    assert suite.gates["intent"].blocking is True
    assert suite.gating.correction == "holm"


# ------------------------------------------------------- component blocks (need registries)


TRAIN_TYPO = HEAD + "train:\n  name: lora\n  r: 8\n  rnk: 8\n"
UNKNOWN_TRAINER = HEAD + "train:\n  name: lorra\n  r: 8\n"


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


def test_typo_in_component_block_names_file_line_and_key(harness_write_suite, harness_registries, ctx):
    path = harness_write_suite(TRAIN_TYPO)
    loaded = load_suite(path)  # the suite itself is valid: options belong to the component
    with pytest.raises(ConfigError) as info:
        build_component(harness_registries, "trainer", loaded.suite.train, ("train",), loaded, ctx)
    message = str(info.value)
    _assert_names_line(message, path, 6, ["train.rnk", "unknown key"])
    assert path.name in message
    assert "lora" in message


def test_unknown_component_lists_available_names(harness_write_suite, harness_registries, ctx):
    path = harness_write_suite(UNKNOWN_TRAINER)
    loaded = load_suite(path)
    with pytest.raises(UnknownComponentError) as info:
        build_component(harness_registries, "trainer", loaded.suite.train, ("train",), loaded, ctx)
    _assert_names_line(str(info.value), path, 3, ["unknown trainer 'lorra'", "available:", "lora"])


# ---------------------------------------------------------------------------------- CLI


CLI_CASES = {**{k: v[0] for k, v in BAD_SUITES.items()}, "train_typo": TRAIN_TYPO, "unknown_trainer": UNKNOWN_TRAINER}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_validate_bad_suite_prints_one_line(case, harness_write_suite, capsys):
    path = harness_write_suite(CLI_CASES[case])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("harness: error: ")
    assert str(path) in lines[0]


def _with_stand_in_adapters(suite: Path, tmp_path: Path) -> Path:
    """``suite`` as is, or, when it gates an adapter that an example script writes (not shipped),
    a copy beside a stand-in adapter folder: its config names the base model it was trained on,
    which is all that validating reads of it."""
    import json

    import yaml

    data = yaml.safe_load(suite.read_text())
    missing = {name: arm for name, arm in (data.get("models") or {}).items()
               if isinstance(arm, dict) and arm.get("adapter") and not (suite.parent / arm["adapter"]).exists()}
    if not missing:
        return suite
    for name, arm in missing.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
        arm["adapter"] = str(folder)
    copy = tmp_path / suite.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return copy


@pytest.mark.parametrize("suite", sorted(DEMO.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_cli_validates_every_shipped_suite(capsys, suite: Path, tmp_path: Path):
    assert main(["validate", str(_with_stand_in_adapters(suite, tmp_path))]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "valid" in out
