"""Batch invariance of the ``hf`` backend on SmolLM2-135M-Instruct in float32: MMLU and HellaSwag,
40 items each, give the same predictions at batch sizes 1 and 8, with log-probabilities within
the default tolerance (the largest difference is printed; ``docs/statistics.md`` quotes it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.run.invariance import DEFAULT_TOLERANCE, run_invariance
from harness.suite.config import load_suite

pytestmark = pytest.mark.integration

SUITE = {
    "name": "invariance",
    "model": {"source": "smollm2-135m-instruct", "dtype": "float32"},
    "evaluate": {
        "mmlu": {"name": "mmlu", "per_subject": 1},
        "hellaswag": {"name": "hellaswag", "sample": 40},
    },
    "report": ["json"],
}


def test_hf_is_batch_invariant_on_mmlu_and_hellaswag(harness_write_suite, harness_registries, tmp_path: Path, capsys) -> None:
    loaded = load_suite(harness_write_suite(SUITE))
    findings = run_invariance(loaded, harness_registries, tmp_path / "work", batch_sizes=(1, 8), limit=40)
    with capsys.disabled():
        for finding in findings:
            print("\n" + finding.line())
    assert [(f.benchmark, f.items) for f in findings] == [("mmlu", 40), ("hellaswag", 40)]
    for finding in findings:
        assert finding.invariant, f"{finding.line()}: {finding.affected}"
        assert finding.max_logprob_diff is not None and finding.max_logprob_diff <= DEFAULT_TOLERANCE
