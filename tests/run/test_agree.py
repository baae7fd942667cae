"""``harness.run.agree``: per-item agreement and the largest log-prob difference, and the run
over a suite's benchmarks with real backends (the tiny model on ``hf`` twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.run.agree import Outputs, compare, run_agreement
from harness.suite.config import load_suite


def test_compare_counts_agreement_and_the_largest_difference() -> None:
    items = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    a = Outputs(["0", "1", "2"], [[-1.0, -2.0], [-3.0, -1.0], [-0.5, -0.4]], seconds=1.5)
    b = Outputs(["0", "0", "2"], [[-1.1, -2.0], [-1.0, -1.2], [-0.5, -0.4]], seconds=0.5)
    result = compare("bench", items, {"hf": a, "other": b})
    assert (result.items, result.agree, result.disagreements) == (3, 2, ["b"])
    assert result.max_logprob_diff == pytest.approx(2.0)
    assert result.items_per_s == {"hf": pytest.approx(2.0), "other": pytest.approx(6.0)}
    assert "2/3 predictions agree, largest log-prob difference 2.0000" in result.line()
    gen = compare("gen", items[:1], {"x": Outputs(["yes"], None, 1.0), "y": Outputs(["yes"], None, 1.0)})
    assert gen.max_logprob_diff is None and gen.agree == 1


def test_the_same_backend_twice_agrees_exactly(harness_write_suite, harness_registries, harness_tiny_model_dir: Path, tmp_path: Path) -> None:
    suite = {
        "name": "agree",
        "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 1, "subjects": ["anatomy"]}},
        "report": ["json"],
    }
    loaded = load_suite(harness_write_suite(suite))
    [result] = run_agreement(loaded, harness_registries, tmp_path / "work", [("hf", {}), ("hf", {})], limit=3)
    assert (result.items, result.agree, result.max_logprob_diff) == (1, 1, 0.0)
    with pytest.raises(ConfigError, match="no benchmark 'nope' under 'evaluate'"):
        run_agreement(loaded, harness_registries, tmp_path / "work", [("hf", {}), ("hf", {})], ["nope"])
