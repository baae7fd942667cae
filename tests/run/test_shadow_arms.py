"""``harness shadow --suite``: a suite's arms as the two sides of a shadow test, resolved as
``harness run`` resolves them: ``trained`` is the model a stored run gated (checked against the
fingerprint it recorded), a prompt variant keeps its system prompt, and an arm the suite does
not evaluate, or a suite never run, is a one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.cli.common import load
from harness.errors import ConfigError
from harness.run.shadow_arms import suite_arms

SYSTEM = "You answer in exactly one word."


@pytest.fixture
def suite(tmp_path: Path, harness_tiny_model_dir: Path) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Spell {i}.", "output": f"{i}."}) + "\n" for i in range(8)))
    doc = {
        "name": "shadow_arms",
        "seed": 3,
        "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "models": {"terse": {"of": "base", "prompt": {"system": SYSTEM}}, "few2": {"of": "base", "prompt": {"shots": 2}}},
        "data": [{"path": str(data), "format": "alpaca"}],
        "train": {"name": "lora", "r": 4, "max_steps": 2, "batch_size": 4, "max_length": 64},
        "evaluate": {"intent": {"name": "support_intent", "sample": 4, "max_new_tokens": 3}},
        "gates": {
            "intent": "no_regression(margin=0.5)",
            "terse_vs_trained": {"benchmark": "intent", "rule": "no_regression()", "baseline": "terse", "candidate": "trained", "blocking": False},
            "few2_vs_trained": {"benchmark": "intent", "rule": "no_regression()", "baseline": "few2", "candidate": "trained", "blocking": False},
        },
        "report": ["json"],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    rows = [{"request": {"messages": [{"role": "user", "content": f"Spell {i}."}]}, "reference": f"{i}."} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_suite_arms_resolve_as_the_run_gated_them(suite: Path, log: Path, tmp_path: Path) -> None:
    loaded, _pm, registries = load(suite)
    store = suite.parent / ".harness"
    with pytest.raises(ConfigError, match="no harness store: run the suite first"):
        suite_arms(loaded, registries, ("base", "trained"), store, "latest")

    assert main(["run", str(suite), "--reports", str(tmp_path / "reports")]) in (0, 1)
    (result_path,) = (tmp_path / "reports").glob("*/result.json")
    result = json.loads(result_path.read_text())
    base, trained = suite_arms(loaded, registries, ("base", "trained"), store, "latest")
    assert trained.ref.adapter == Path(result["train"]["path"]) and base.ref.adapter is None
    assert result["models"]["candidate"].endswith(f"[{trained.ref.fingerprint[:12]}]")  # the model the gate saw

    terse, few2 = suite_arms(loaded, registries, ("terse", "few2"), store, "latest")
    for arm, expected in ((terse, 1), (few2, 3)):  # the system prompt; two curated examples, then the request
        api = arm.load()
        try:
            rendered = api.render_chat([{"role": "user", "content": "Spell 100."}])
        finally:
            api.close()
        assert (SYSTEM in rendered) == (arm is terse) and rendered.count("Spell ") == expected, rendered

    with pytest.raises(ConfigError, match=r"no arm 'nope' that the suite evaluates \(its arms: base, few2, terse, trained\)"):
        suite_arms(loaded, registries, ("base", "nope"), store, "latest")

    out = tmp_path / "shadow.json"
    assert main(["shadow", "--requests", str(log), "--suite", str(suite), "--max-tokens", "4", "--json", str(out)]) == 0
    shadow = json.loads(out.read_text())
    assert shadow["models"] == ["base", "trained"] and shadow["requests"] == 3 and shadow["with_reference"] == 3

    # the adapter changed after the run: the shadow test would not replay against the gated model
    adapter = Path(result["train"]["path"])
    weights = next(adapter.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ConfigError, match="changed since the run gated it"):
        suite_arms(loaded, registries, ("base", "trained"), store, "latest")
    shutil.rmtree(adapter)
    with pytest.raises(ConfigError, match="is gone"):
        suite_arms(loaded, registries, ("base", "trained"), store, "latest")


def test_command_line_mistakes_are_one_line_errors(suite: Path, log: Path, capsys) -> None:
    assert main(["shadow", "--requests", str(log), "--baseline", "smollm2-135m-instruct"]) == 2
    assert "--candidate: required without --suite" in capsys.readouterr().err
    assert main(["shadow", "--requests", str(log), "--suite", str(suite), "--baseline", "trained"]) == 2
    assert "both name arm 'trained'" in capsys.readouterr().err
    assert main(["shadow", "--requests", str(log), "--baseline", "a", "--candidate", "b", "--run", "x"]) == 2
    assert "--run goes with --suite" in capsys.readouterr().err
