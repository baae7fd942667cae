"""``pytest --harness-suite``: a suite runs once and each gate is a test item whose outcome is
the gate's verdict, as pytest's JUnit output shows (scripted components, no model)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

FIXTURES = Path(__file__).parent / "fixtures"

CONFTEST = f"""
import sys
sys.path.insert(0, {str(FIXTURES)!r})
from scripted_plugin import Plugin

RUNS = []

def pytest_harness_plugins(config):
    RUNS.append(1)
    return [("scripted", Plugin())]

def pytest_sessionfinish(session):
    print(f"suite runs: {{len(RUNS)}}")
"""

EVALUATE = {
    "gain": {"name": "scripted", "baseline": "10", "candidate": "1"},  # wins 20 of 40: superior passes
    "loss": {"name": "scripted", "baseline": "1110", "candidate": "1000"},  # loses 20 of 40: no_regression fails
    "same": {"name": "scripted", "baseline": "10", "candidate": "01"},  # 20 won, 20 lost: inconclusive
    "broken": {"name": "scripted", "raise_for": "candidate"},  # the candidate cannot be scored: error
}
GATES = {
    "gain": "superior()",
    "loss": "no_regression()",
    "same": "non_inferior(margin=0.02)",
    "broken": "no_regression()",
    "advisory": {"rule": "no_regression()", "benchmark": "loss", "blocking": False},
}


def _suite(pytester: pytest.Pytester, name: str, inconclusive: str) -> Path:
    from scripted_plugin import write_scripted_suite

    return write_scripted_suite(pytester.path / name, EVALUATE, GATES, name=name, gating={"inconclusive": inconclusive})


@pytest.fixture
def junit(pytester: pytest.Pytester) -> tuple[pytest.RunResult, dict[str, ET.Element]]:
    """One session over two suites that differ only in gating.inconclusive."""
    import sys

    sys.path.insert(0, str(FIXTURES))
    pytester.makeconftest(CONFTEST)
    strict, lenient = _suite(pytester, "strict", "fail"), _suite(pytester, "lenient", "pass")
    result = pytester.runpytest_subprocess(
        "--harness-suite", str(strict), "--harness-suite", str(lenient),
        "--harness-reports", str(pytester.path / "reports"), "--harness-store", str(pytester.path / "store"),
        "--junitxml", str(pytester.path / "junit.xml"), "-p", "no:cacheprovider", "-s",
    )
    cases = {f"{c.get('classname')}::{c.get('name')}": c for c in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    return result, cases


def _case(cases: dict[str, ET.Element], suite: str, gate: str) -> ET.Element:
    [case] = [c for key, c in cases.items() if key.endswith(f"::{gate}") and suite in key]
    return case


def test_each_gate_is_an_item_with_the_gates_outcome(junit) -> None:
    result, cases = junit
    # strict: gain passes, loss and same fail, broken errors, advisory skipped;
    # lenient: the same, but the inconclusive gate passes
    result.assert_outcomes(passed=3, failed=3, errors=2, skipped=2)
    assert len(cases) == 10
    for suite in ("strict", "lenient"):
        assert list(_case(cases, suite, "gain")) == [c for c in _case(cases, suite, "gain") if c.tag in ("properties", "system-out")]
        assert _case(cases, suite, "loss").find("failure") is not None
        assert "regressed by more than 0" in _case(cases, suite, "loss").find("failure").get("message")
        error = _case(cases, suite, "broken").find("error")
        assert error is not None and "scripted failure for candidate" in error.get("message")
        assert "advisory gate, fail" in _case(cases, suite, "advisory").find("skipped").get("message")
    assert _case(cases, "strict", "same").find("failure") is not None
    lenient_same = _case(cases, "lenient", "same")
    assert lenient_same.find("failure") is None and lenient_same.find("error") is None and lenient_same.find("skipped") is None
    props = {p.get("name"): p.get("value") for p in _case(cases, "strict", "same").iter("property")}
    assert props["verdict"] == "inconclusive" and props["rule"] == "non_inferior(margin=0.02)" and props["run_id"]
    result.stdout.fnmatch_lines(["*suite runs: 2*"])  # one run per suite file, not one per gate


def test_collect_only_runs_nothing(pytester: pytest.Pytester) -> None:
    import sys

    sys.path.insert(0, str(FIXTURES))
    pytester.makeconftest(CONFTEST)
    suite = _suite(pytester, "strict", "fail")
    pytester.makepyfile(test_unit="def test_unit():\n    pass\n")
    result = pytester.runpytest_subprocess("--harness-suite", str(suite), "--collect-only", "-q", "-p", "no:cacheprovider", "-s", "-m", "harness_gate")
    result.stdout.fnmatch_lines(["*strict.yaml::gain", "*strict.yaml::advisory", "*suite runs: 0*", "*5/6 tests collected (1 deselected)*"])
    assert not (pytester.path / "reports").exists()


def test_a_suite_with_bad_input_is_a_usage_error(pytester: pytest.Pytester) -> None:
    bad = pytester.makefile(".yaml", bad="name: x\nmodel: m\ngates: {g: superior()}\n")
    result = pytester.runpytest_subprocess("--harness-suite", str(bad), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--harness-suite*bad.yaml*no benchmark 'g'*"])
