"""File reporters: ``result.json`` (versioned schema, per-item results, ledger, decisions),
``quarantine.jsonl`` (malformed input lines with their reasons) and ``junit.xml`` (one test case
per gate).  Files are written atomically (temporary file, then rename)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness.plugin.components import Reporter
from harness.types import RunResult, Verdict

RESULT_SCHEMA = "finetune-harness/result/v1"


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def result_to_json(result: RunResult) -> dict[str, Any]:
    errors = [e.__dict__ for e in result.eval_errors]
    benchmarks = {
        label: {
            model: {
                "benchmark": res.benchmark,
                "metric": res.metric,
                "score": res.score,
                "n": len(res.items),
                "summary": res.summary,
                "from_cache": res.from_cache,
                "cached_items": res.cached_items,
                "cache_key": res.cache_key,
                "items": [i.__dict__ for i in res.items],
            }
            for model, res in per_model.items()
        }
        for label, per_model in result.benchmarks.items()
    }
    return {
        "schema": RESULT_SCHEMA,
        "harness_version": harness.__version__,
        "run_id": result.run_id,
        "suite": {"name": result.suite_name, "path": str(result.suite_path)},
        "started_at": datetime.fromtimestamp(result.started_at, UTC).isoformat(),
        "duration_s": round(result.duration_s, 3),
        "exit_code": result.exit_code,
        "models": result.models,
        "ledger": result.ledger.to_json() if result.ledger else None,
        "train": (
            {**result.train.to_json(), "from_cache": result.train_from_cache} if result.train else None
        ),
        "train_error": result.train_error,
        "plugin_errors": list(result.plugin_errors),
        "checkpoints": [
            {**c.__dict__, "path": str(c.path)} for c in result.checkpoints
        ],
        "forgetting": result.forgetting.to_json() if result.forgetting else None,
        "forgetting_compare": {label: f.to_json() for label, f in result.forgetting_compare.items()},
        "compare_train": {
            label: {"error": output} if isinstance(output, str) else output.to_json()
            for label, output in result.compare_train.items()
        },
        "benchmarks": benchmarks,
        "eval_errors": errors,
        "parity": (
            {
                "requests": result.parity.requests,
                "notes": result.parity.notes,
                "pipelines": result.parity.pipelines,
                "checks": [c.to_json() for c in result.parity.checks],
            }
            if result.parity
            else None
        ),
        "decisions": [d.to_json() for d in result.decisions],
        "stages": [s.__dict__ for s in result.stages],
    }


class JsonReporter(Reporter):
    name = "json"
    description = "result.json with per-item results, ledger and decisions; quarantine.jsonl"

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        written = [_write(out_dir / "result.json", json.dumps(result_to_json(result), indent=2))]
        if result.ledger and result.ledger.quarantined:
            lines = (json.dumps(q.__dict__, ensure_ascii=False) for q in result.ledger.quarantined)
            written.append(_write(out_dir / "quarantine.jsonl", "\n".join(lines) + "\n"))
        return written


class JUnitReporter(Reporter):
    name = "junit"
    description = "junit.xml with one test case per gate and per parity check (for CI test views)"

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        suite = ET.Element("testsuite", name=f"harness.{result.suite_name}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for d in result.decisions:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"gates.{d.benchmark}", name=d.gate)
            message = f"{d.verdict.value}: {d.rule}: {d.reason}"
            if d.verdict is Verdict.PASS:
                ET.SubElement(case, "system-out").text = message
            elif not d.blocking:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=f"advisory gate, {message}")
            elif d.verdict is Verdict.ERROR:
                counts["errors"] += 1
                ET.SubElement(case, "error", message=message)
            elif d.verdict is Verdict.FAIL or result.inconclusive_fails:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=message)
            else:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=message)
        gated = {d.gate for d in result.decisions}
        for c in result.parity.checks if result.parity else ():
            if f"parity.{c.check}" in gated:
                continue  # already a case, as a gate
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname="parity", name=c.check)
            if c.status == "error":
                counts["errors"] += 1
                ET.SubElement(case, "error", message=f"error: {c.error}")
            elif c.findings:
                counts["skipped"] += 1
                text = "; ".join(f"{f.severity} {f.cause}: {f.summary}" for f in c.findings)
                ET.SubElement(case, "skipped", message=f"not gated, findings: {text}")
            else:
                ET.SubElement(case, "system-out").text = "no finding"
        for key, value in counts.items():
            suite.set(key, str(value))
        suite.set("time", f"{result.duration_s:.3f}")
        ET.indent(suite)
        text = ET.tostring(suite, encoding="unicode", xml_declaration=True)
        return [_write(out_dir / "junit.xml", text + "\n")]


@harness.hookimpl
def harness_register_reporters(registrar) -> None:
    registrar.add(JsonReporter)
    registrar.add(JUnitReporter)
