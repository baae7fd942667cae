"""File reporters: ``result.json`` (the versioned result document, see ``harness.lib.resultdoc``),
``quarantine.jsonl`` (malformed input lines with their reasons) and ``junit.xml`` (one test case
per gate).  Both render from the result document, so ``harness report RUN --format json|junit``
writes the same bytes for a stored run.  Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import harness
from harness.lib.resultdoc import RESULT_SCHEMA, result_document, write_files
from harness.plugin.components import Reporter
from harness.plugin.registry import Registrar
from harness.types import RunResult, shown_verdict

__all__ = ["RESULT_SCHEMA", "JUnitReporter", "JsonReporter"]


class JsonReporter(Reporter):
    name = "json"
    description = "result.json with per-item results, ledger and decisions; quarantine.jsonl"

    def render(self, document: dict[str, Any]) -> dict[str, str]:
        files = {"result.json": json.dumps(document, indent=2)}
        quarantined = (document.get("ledger") or {}).get("quarantined") or []
        if quarantined:
            lines = (json.dumps(q, ensure_ascii=False) for q in quarantined)
            files["quarantine.jsonl"] = "\n".join(lines) + "\n"
        return files

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        return write_files(self.render(result_document(result)), out_dir)


def _gate_case(suite: ET.Element, d: dict[str, Any], inconclusive_fails: bool) -> str:
    """One gate as a test case; returns the count it adds to (``failures``, ``errors``...)."""
    case = ET.SubElement(suite, "testcase", classname=f"gates.{d['benchmark']}", name=d["gate"])
    message = f"{shown_verdict(d['verdict'], bool(d.get('underpowered')))}: {d['rule']}: {d['reason']}"
    if d["verdict"] == "pass":
        ET.SubElement(case, "system-out").text = message
        return "passed"
    if not d["blocking"]:
        ET.SubElement(case, "skipped", message=f"advisory gate, {message}")
        return "skipped"
    if d["verdict"] == "error":
        ET.SubElement(case, "error", message=message)
        return "errors"
    if d["verdict"] == "fail" or inconclusive_fails:
        ET.SubElement(case, "failure", message=message)
        return "failures"
    ET.SubElement(case, "skipped", message=message)
    return "skipped"


def _parity_case(suite: ET.Element, c: dict[str, Any]) -> str:
    case = ET.SubElement(suite, "testcase", classname="parity", name=c["check"])
    if c["status"] == "error":
        ET.SubElement(case, "error", message=f"error: {c['error']}")
        return "errors"
    if c["findings"]:
        text = "; ".join(f"{f['severity']} {f['cause']}: {f['summary']}" for f in c["findings"])
        ET.SubElement(case, "skipped", message=f"not gated, findings: {text}")
        return "skipped"
    ET.SubElement(case, "system-out").text = "no finding"
    return "passed"


class JUnitReporter(Reporter):
    name = "junit"
    description = "junit.xml with one test case per gate and per parity check (for CI test views)"

    def render(self, document: dict[str, Any]) -> dict[str, str]:
        suite = ET.Element("testsuite", name=f"harness.{document['suite']['name']}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "passed": 0}
        inconclusive_fails = document.get("gating", {}).get("inconclusive", "fail") == "fail"
        for d in document["decisions"]:
            counts["tests"] += 1
            counts[_gate_case(suite, d, inconclusive_fails)] += 1
        gated = {d["gate"] for d in document["decisions"]}
        for c in (document.get("parity") or {}).get("checks", []):
            if f"parity.{c['check']}" in gated:
                continue  # already a case, as a gate
            counts["tests"] += 1
            counts[_parity_case(suite, c)] += 1
        for key in ("tests", "failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
        suite.set("time", f"{document['duration_s']:.3f}")
        ET.indent(suite)
        text = ET.tostring(suite, encoding="unicode", xml_declaration=True)
        return {"junit.xml": text + "\n"}

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        return write_files(self.render(result_document(result)), out_dir)


@harness.hookimpl
def harness_register_reporters(registrar: Registrar) -> None:
    registrar.add(JsonReporter)
    registrar.add(JUnitReporter)
