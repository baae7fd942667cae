"""The parity stage inside ``harness run`` and its bad-input handling: a parity section runs after
evaluation and its checks become gates beside the benchmark gates; a broken check is an error for
that check only; malformed request lines are quarantined and counted; unknown checks and missing
files are one-line errors naming the place."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.cli import main
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.plugin.manager import DEFAULT_PLUGINS

REQUEST = {"messages": [{"role": "user", "content": "Where is my parcel?"}], "metadata": {"reference": "DELIVERY"}}


def _log(path: Path, bad_line: bool = False) -> Path:
    lines = [json.dumps({"request": REQUEST})] * 3
    if bad_line:
        lines.insert(1, '{"request": {"messages": "not a list"}}')
    path.write_text("\n".join(lines) + "\n")
    return path


def _suite(tmp_path: Path, model: Path, **parity: Any) -> dict[str, Any]:
    return {
        "name": "stage",
        "model": str(model),
        "parity": {
            "requests": {"path": "requests.jsonl", "format": "openai_requests"},
            "offline": {"sampling": {"temperature": 0}},
            "production": {"sampling": {"temperature": 0}, "add_bos": True},
            "checks": {"template": "template", "preprocessing": "preprocessing"},
            **parity,
        },
        "report": ["json", "junit"],
    }


def _result(tmp_path: Path) -> tuple[dict[str, Any], ET.Element]:
    (report,) = (tmp_path / "reports").iterdir()
    return json.loads((report / "result.json").read_text()), ET.parse(report / "junit.xml").getroot()


def test_harness_run_adds_parity_gates_and_reports_one_junit_case_per_check(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    _log(tmp_path / "requests.jsonl", bad_line=True)
    path = harness_write_suite(_suite(tmp_path, harness_tiny_model_dir, gate={"fail_on": "high", "blocking": True}))
    code = main(["run", str(path), "--reports", str(tmp_path / "reports"), "--store", str(tmp_path / "store")])
    result, junit = _result(tmp_path)
    assert code == 1  # template: high double_bos
    verdicts = {d["gate"]: d["verdict"] for d in result["decisions"]}
    assert verdicts == {"parity.template": "fail", "parity.preprocessing": "pass"}
    assert result["parity"]["requests"] == 3
    assert any("quarantined" in n and "requests.jsonl:2" in n for n in result["parity"]["notes"])
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert set(cases) == {"parity.template", "parity.preprocessing"}
    assert cases["parity.template"].find("failure") is not None
    stages = [s["stage"] for s in result["stages"]]
    assert stages.index("parity") < stages.index("gate")


def test_ungated_checks_are_junit_cases_too(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    _log(tmp_path / "requests.jsonl")
    path = harness_write_suite(_suite(tmp_path, harness_tiny_model_dir))
    code = main(["parity", str(path), "--reports", str(tmp_path / "reports"), "--store", str(tmp_path / "store")])
    result, junit = _result(tmp_path)
    assert code == 0 and result["decisions"] == []  # findings without a gate do not fail the run
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert set(cases) == {"template", "preprocessing"}
    skipped = cases["template"].find("skipped")
    assert skipped is not None and "double_bos" in skipped.get("message", "")
    assert cases["preprocessing"].find("system-out").text == "no finding"


class _Broken(ParityCheck):
    name = "broken_check"

    def run(self, ctx) -> CheckOutput:
        raise RuntimeError("boom")


class _BrokenPlugin:
    @harness.hookimpl
    def harness_register_parity_checks(self, registrar) -> None:
        registrar.add(_Broken)


def test_a_broken_check_is_an_error_for_itself_only(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.plugin import manager as plugins

    real = plugins.get_plugin_manager

    def with_broken(*args, **kwargs):
        pm = real(*args, **kwargs)
        pm.register(_BrokenPlugin(), name="broken_plugin")
        return pm

    monkeypatch.setattr(plugins, "get_plugin_manager", with_broken)
    _log(tmp_path / "requests.jsonl")
    checks = {"broken": "broken_check", "template": "template"}
    path = harness_write_suite(_suite(tmp_path, harness_tiny_model_dir, checks=checks, gate={"fail_on": "high"}))
    code = main(["parity", str(path), "--reports", str(tmp_path / "reports"), "--store", str(tmp_path / "store")])
    result, _ = _result(tmp_path)
    statuses = {c["check"]: (c["status"], c["error"]) for c in result["parity"]["checks"]}
    assert statuses["broken"] == ("error", "RuntimeError: boom")
    assert statuses["template"][0] == "findings"
    assert code == 3
    assert "harness_plugins.parity.template" in DEFAULT_PLUGINS


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"checks": {"nope": "no_such_check"}}, r"suite.yaml:\d+: unknown parity_check 'no_such_check'; available: .*template"),
        ({"production": {"chat_template_file": "missing.jinja"}}, r"parity.production.chat_template_file: not found"),
        ({"requests": {"path": "absent.jsonl", "format": "openai_requests"}}, r"suite.yaml:\d+: data file .*absent.jsonl does not exist"),
        ({"production": {"add_boss": True}}, r"suite.yaml:\d+: parity.production.add_boss: unknown key"),
    ],
)
def test_bad_parity_config_is_one_line_naming_the_place(
    tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], change: dict, expected: str
) -> None:
    import re

    _log(tmp_path / "requests.jsonl")
    path = harness_write_suite(_suite(tmp_path, harness_tiny_model_dir, **change))
    code = main(["parity", str(path), "--reports", str(tmp_path / "reports"), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and re.search(expected, err), err
