"""Failures into data: the held-out items a stored run's candidate got wrong, grouped, as a work
list in the training format.

Reading the run's result document (nothing is scored again), every benchmark whose item scores
are 0/1 (exact match, pass/fail) gives its items with a score below 1.  They are grouped by the
item's category when the benchmark records one (``support_intent``: the intent), else by topic:
the prompts are embedded with MiniLM (``harness.lib.embed``) and clustered with seeded KMeans, each
cluster named by the prompt nearest its centre.  That is the diagnosis step of "find the failure
modes, then add examples specifically for them": a group's size says where to spend annotation.

The work list is OpenAI ``messages`` JSONL, the format the ``messages`` reader (and ``harness
curate``) reads: the user turn is the prompt the model was asked, the assistant turn the
benchmark's reference answer (what an annotator checks and edits), and a ``failure`` object keeps
where the item came from (run, benchmark, item, group) and what the candidate and the baseline
answered.  Records are written largest group first, so a partial annotation covers the most.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import DataError

EXCERPT = 80
"""Characters of a prompt shown as a group's example."""


@dataclass(frozen=True)
class Failure:
    """One held-out item the candidate got wrong."""

    benchmark: str
    item_id: str
    prompt: str
    reference: str
    prediction: str
    category: str
    baseline_prediction: str | None
    baseline_correct: bool | None
    """Whether the baseline had it right: ``True`` is a regression, ``False`` never learned."""


def _binary(items: Sequence[dict[str, Any]]) -> bool:
    return bool(items) and all(i["score"] in (0, 1) for i in items)


def collect_failures(doc: dict[str, Any], benchmarks: Sequence[str] = (), model: str = "candidate") -> list[Failure]:
    """The items ``model`` got wrong in the run ``doc``, for the named benchmarks (default: every
    benchmark with 0/1 item scores); a named benchmark that is missing or not 0/1 is an error."""
    stored = doc.get("benchmarks", {})
    for label in benchmarks:
        if label not in stored or model not in stored[label]:
            raise DataError(f"run {doc['run_id']}: no {label!r} results for the {model} (benchmarks: {sorted(stored)})")
        if not _binary(stored[label][model]["items"]):
            raise DataError(f"run {doc['run_id']}: {label!r} scores are not 0/1, so no item is simply wrong")
    failures = []
    for label, per_model in stored.items():
        items = per_model.get(model, {}).get("items", [])
        if (benchmarks and label not in benchmarks) or not _binary(items):
            continue
        base = {i["item_id"]: i for i in per_model.get("baseline", {}).get("items", [])} if model != "baseline" else {}
        for item in items:
            if item["score"] >= 1:
                continue
            other = base.get(item["item_id"])
            failures.append(Failure(
                label, item["item_id"], item.get("prompt", ""), item["reference"], item["prediction"],
                item.get("category", ""), other["prediction"] if other else None,
                bool(other["score"] >= 1) if other else None,
            ))
    return failures


def group_failures(failures: Sequence[Failure], clusters: int = 8, seed: int = 0) -> dict[str, list[Failure]]:
    """Failures by category, largest group first; those without one by MiniLM topic cluster."""
    groups: dict[str, list[Failure]] = {}
    loose = [f for f in failures if not f.category]
    for f in failures:
        if f.category:
            groups.setdefault(f.category, []).append(f)
    if loose:
        for name, members in _clusters(loose, clusters, seed).items():
            groups.setdefault(name, []).extend(members)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _clusters(failures: Sequence[Failure], clusters: int, seed: int) -> dict[str, list[Failure]]:
    """Seeded KMeans over the prompts' MiniLM embeddings; a cluster is named by its medoid."""
    from harness.errors import require
    from harness.lib.embed import embed

    np = require("numpy")
    cluster = require("sklearn.cluster")
    texts = [f.prompt or f.reference for f in failures]
    vectors = embed(texts)
    k = max(1, min(clusters, len(np.unique(vectors, axis=0))))
    km = cluster.KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
    out: dict[str, list[Failure]] = {}
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if not members.size:
            continue
        centre = vectors[members] @ km.cluster_centers_[c]
        medoid = " ".join(texts[members[int(centre.argmax())]].split())[:EXCERPT]
        out[f"cluster {c + 1}: {medoid}"] = [failures[i] for i in members]
    return out


def group_summary(groups: dict[str, list[Failure]], examples: int = 2) -> list[dict[str, Any]]:
    """Per group: its size, how many were regressions (the baseline had them right), and examples."""
    return [
        {
            "group": name,
            "count": len(members),
            "regressions": sum(1 for f in members if f.baseline_correct),
            "benchmarks": dict(Counter(f.benchmark for f in members)),
            "examples": [
                {"prompt": " ".join(f.prompt.split())[:EXCERPT], "reference": f.reference, "prediction": f.prediction}
                for f in members[:examples]
            ],
        }
        for name, members in groups.items()
    ]


def work_records(run_id: str, groups: dict[str, list[Failure]]) -> list[dict[str, Any]]:
    """The work list in the training format (OpenAI ``messages``), largest group first."""
    records = []
    for name, members in groups.items():
        for f in members:
            if not f.prompt:
                raise DataError(f"run {run_id}: {f.benchmark} item {f.item_id} has no stored prompt to train on")
            failure: dict[str, Any] = {"run": run_id, "group": name, **asdict(f)}
            records.append({
                "messages": [{"role": "user", "content": f.prompt}, {"role": "assistant", "content": f.reference}],
                "failure": failure,
            })
    return records


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write ``records`` as JSONL, atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)
