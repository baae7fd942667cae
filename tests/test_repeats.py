"""``harness.lib.repeats``: per-item seeds, the mean of samples, and the refusal of greedy repeats."""

from __future__ import annotations

import pytest

from harness.lib.repeats import cache_material, check_repeats, item_seed, mean_of
from harness.types import ItemResult, Sample


def test_item_seeds_are_stable_and_differ_by_seed_and_item() -> None:
    assert item_seed(0, "HumanEval/1") == item_seed(0, "HumanEval/1")
    assert len({item_seed(s, i) for s in (0, 1) for i in ("a", "b", "c")}) == 6
    assert 0 <= item_seed(123, "x") < 2**31


def test_mean_of_samples_and_the_json_round_trip() -> None:
    score, samples = mean_of([1.0, 0.0, 0.0, 1.0], ["a", "b", "c", "d"])
    assert score == 0.5 and samples[1] == Sample(0.0, "b")
    result = ItemResult("i", "a", "r", score, samples=samples)
    data = result.to_json()
    assert data["samples"][3] == {"score": 1.0, "raw": "d"}
    assert ItemResult(**data) == result
    assert "samples" not in ItemResult("j", "a", "r", 1.0).to_json()
    with pytest.raises(ValueError):
        mean_of([1.0], ["a", "b"])


def test_greedy_repeats_are_refused_and_the_seed_keys_sampled_results_only() -> None:
    with pytest.raises(ValueError, match="samples=3 at temperature 0"):
        check_repeats(3, 0.0)
    check_repeats(1, 0.0)
    check_repeats(3, 0.7)
    assert cache_material(1, 5) == {} and cache_material(2, 5) == {"sampling_seed": 5}
