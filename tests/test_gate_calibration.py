"""The calibration benchmark's simulation: a non_inferior or superior pass where the rule's claim
is false stays at or below alpha plus three Monte-Carlo standard errors (binary and continuous
scores, with and without clustering).  Small and seeded, so it runs in seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("gate_calibration", Path(__file__).parents[1] / "benchmarks" / "gate_calibration.py")
assert SPEC is not None and SPEC.loader is not None
calibration = importlib.util.module_from_spec(SPEC)
sys.modules["gate_calibration"] = calibration  # its dataclasses look their module up
SPEC.loader.exec_module(calibration)

SIMS = 100
ALPHA = 0.05


@pytest.mark.parametrize("rule", ["non_inferior", "superior"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "continuous"])
@pytest.mark.parametrize("clustered", [False, True], ids=["independent", "clustered"])
def test_unsafe_pass_share_stays_at_alpha(rule, binary, clustered):
    case = calibration.unsafe_case(rule, binary, clustered, 200)
    shares = calibration.shares(case, SIMS, ALPHA, seed=1, resamples=300)
    assert shares["pass"] <= ALPHA + 3 * calibration.mc_se(ALPHA, SIMS), shares


def test_the_simulation_has_the_stated_true_change():
    """The check above means something only if the data really have the stated change."""
    import random

    for binary in (True, False):
        case = calibration.Case("non_inferior", binary, True, 20000, -0.05)
        base, cand, clusters = calibration.simulate(case, random.Random(3))
        assert sum(cand) / len(cand) - sum(base) / len(base) == pytest.approx(-0.05, abs=0.01)
        assert clusters is not None and len(set(clusters)) == 2000
