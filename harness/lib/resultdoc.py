"""The result document: one versioned JSON value that holds everything a report shows about a run.

The ``json`` reporter writes it as ``result.json``; the HTML, Markdown and JUnit reporters render
from it; the store keeps it per run, so ``harness report RUN`` renders a past run again, byte for
byte, without recomputing anything.  Rendering is a pure function of this document: what a report
needs from outside the run (earlier runs of the suite for the history chart, the command line and
versions for provenance) is put into the document when the run is recorded.

Schema ``finetune-harness/result/v2`` (v1 plus): per-item ``raw`` and ``prompt``; ``gating``
(how an inconclusive blocking gate counts); ``history`` (earlier runs' scores); ``provenance``
(suite digest, seed, command line, versions); ``prompt_costs`` (per prompt-variant arm: example
tokens, mean input tokens, context share) and ``arm_pairs`` (every pair of arms with its paired
interval and the prompting rule's verdict, ``null`` for a plain baseline-candidate run), both
optional to readers.  See docs/reports.md.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness.errors import ConfigError, DataError
from harness.lib.store import Store
from harness.types import BenchmarkResult, RunResult, RunSummary

RESULT_SCHEMA = "finetune-harness/result/v2"
HISTORY_RUNS = 10
"""How many earlier runs of the same suite a report's history shows."""
PROVENANCE_PACKAGES = ("torch", "transformers", "peft", "lm_eval", "accelerate", "vllm")


def _benchmark(res: BenchmarkResult) -> dict[str, Any]:
    return {
        "benchmark": res.benchmark,
        "metric": res.metric,
        "score": res.score,
        "n": len(res.items),
        "summary": res.summary,
        "from_cache": res.from_cache,
        "cached_items": res.cached_items,
        "cache_key": res.cache_key,
        "items": [i.to_json() for i in res.items],
    }


def _parity(result: RunResult) -> dict[str, Any] | None:
    if result.parity is None:
        return None
    return {
        "requests": result.parity.requests,
        "notes": result.parity.notes,
        "pipelines": result.parity.pipelines,
        "checks": [c.to_json() for c in result.parity.checks],
    }


def result_document(result: RunResult) -> dict[str, Any]:
    """The run as a JSON-ready document (already normalised through JSON: tuples are lists and
    paths strings, so a document read back from the store renders exactly as this one)."""
    doc = {
        "schema": RESULT_SCHEMA,
        "harness_version": harness.__version__,
        "run_id": result.run_id,
        "suite": {"name": result.suite_name, "path": str(result.suite_path)},
        "started_at": datetime.fromtimestamp(result.started_at, UTC).isoformat(),
        "duration_s": round(result.duration_s, 3),
        "exit_code": result.exit_code,
        "gating": {"inconclusive": "fail" if result.inconclusive_fails else "pass"},
        "models": result.models,
        "arms": result.arms,
        "ledger": result.ledger.to_json() if result.ledger else None,
        "train": {**result.train.to_json(), "from_cache": result.train_from_cache} if result.train else None,
        "train_error": result.train_error,
        "plugin_errors": list(result.plugin_errors),
        "checkpoints": [{**c.__dict__, "path": str(c.path)} for c in result.checkpoints],
        "forgetting": result.forgetting.to_json() if result.forgetting else None,
        "forgetting_compare": {label: f.to_json() for label, f in result.forgetting_compare.items()},
        "compare_train": {
            label: {"error": output} if isinstance(output, str) else output.to_json()
            for label, output in result.compare_train.items()
        },
        "benchmarks": {
            label: {model: _benchmark(res) for model, res in per_model.items()}
            for label, per_model in result.benchmarks.items()
        },
        "eval_errors": [e.__dict__ for e in result.eval_errors],
        "invariance": [f.to_json() for f in result.invariance],
        "prompt_costs": {label: asdict(cost) for label, cost in result.prompt_costs.items()},
        "arm_pairs": result.arm_pairs,
        "seeds": result.seeds.to_json() if result.seeds else None,
        "ablation": [a.to_json() for a in result.ablation],
        "parity": _parity(result),
        "decisions": [d.to_json() for d in result.decisions],
        "stages": [s.__dict__ for s in result.stages],
        "history": [asdict(h) for h in result.history],
        "provenance": result.provenance,
    }
    plain: dict[str, Any] = json.loads(json.dumps(doc, default=str))
    return plain


def check_document(doc: Any, where: str) -> dict[str, Any]:
    """``doc`` when it is a result document this harness renders; a one-line error otherwise."""
    if not isinstance(doc, dict) or "schema" not in doc:
        raise DataError(f"{where}: not a harness result document (no 'schema')")
    if doc["schema"] != RESULT_SCHEMA:
        raise DataError(f"{where}: result schema {doc['schema']!r}; this harness renders {RESULT_SCHEMA!r}")
    return doc


# --------------------------------------------------------------------- recorded with the run


def _command() -> str:
    argv = list(sys.argv) or ["?"]
    if argv[0].endswith(("harness", os.path.join("harness", "cli", "__main__.py"))):
        argv[0] = "harness"
    else:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def provenance(suite_path: Path, seed: int) -> dict[str, Any]:
    """Where the run came from: the suite file's digest, the seed, the command line, the
    harness, Python and key package versions."""
    try:
        digest: str | None = hashlib.sha256(Path(suite_path).read_bytes()).hexdigest()
    except OSError:
        digest = None
    packages = {}
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "suite_sha256": digest,
        "seed": seed,
        "command": _command(),
        "harness": harness.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": packages,
    }


def summarize(doc: dict[str, Any]) -> RunSummary:
    """A stored run as one point of the history: each benchmark's score per model."""
    scores = {
        label: {model: res["score"] for model, res in per_model.items()}
        for label, per_model in doc.get("benchmarks", {}).items()
    }
    return RunSummary(doc["run_id"], doc["started_at"], doc.get("exit_code"), scores)


def suite_history(store: Store, suite: str, run_id: str, limit: int = HISTORY_RUNS) -> list[RunSummary]:
    """The last ``limit`` runs of ``suite`` before ``run_id`` whose documents the store keeps."""
    runs = [r for r in store.list_runs(suite) if r["has_result"] and r["run_id"] != run_id]
    history = []
    for row in runs[-limit:]:
        try:
            doc = store.load_result(row["run_id"])
        except ValueError:  # an unreadable earlier document costs that point of the chart, not the report
            continue
        if doc is not None and doc.get("schema") == RESULT_SCHEMA:
            history.append(summarize(doc))
    return history


def record_result(store: Store, result: RunResult, seed: int) -> dict[str, Any]:
    """Attach the suite's history and the run's provenance to ``result``, and keep its result
    document in the store; the reporters then render the same document from ``result``."""
    result.history = suite_history(store, result.suite_name, result.run_id)
    result.provenance = provenance(result.suite_path, seed)
    document = result_document(result)
    store.save_result(result.run_id, result.suite_name, document)
    return document


# ------------------------------------------------------------------------ read back for reports


def find_run(store: Store, run: str) -> str:
    """The id of the stored run that ``run`` names: an exact id, ``latest``, or a unique prefix
    or suffix of one (a one-line error otherwise)."""
    runs = store.list_runs()
    ids: list[str] = [r["run_id"] for r in runs]
    if run in ids:
        return run
    if run == "latest" and ids:
        return ids[-1]
    matches = [i for i in ids if i.startswith(run) or i.endswith(run)]
    if len(matches) == 1:
        return matches[0]
    where = store.root / "store.sqlite"
    if not matches:
        raise ConfigError(f"{where}: no run {run!r} (harness runs lists them)")
    raise ConfigError(f"{where}: {run!r} names {len(matches)} runs: {', '.join(matches[:5])}")


def load_document(store: Store, run: str) -> dict[str, Any]:
    """The stored result document of the run ``run`` names."""
    run_id = find_run(store, run)
    doc = store.load_result(run_id)
    if doc is None:
        raise DataError(
            f"{store.root / 'store.sqlite'}: run {run_id} has no stored result document "
            "(it was killed before its report, or recorded by an older harness)"
        )
    return check_document(doc, f"{store.root / 'store.sqlite'}: run {run_id}")


def write_files(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write rendered report files into ``out_dir``, each atomically (a temporary file, then a
    rename), so a reader never sees half a report; returns their paths in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
