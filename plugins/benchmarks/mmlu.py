"""MMLU (Hendrycks et al.) on the real CSVs, through lm-evaluation-harness.

A fixed, seeded, subject-stratified sample: ``per_subject`` questions from each of the 57 subjects
(or the listed ``subjects``) of the chosen split.  The prompt is lm-eval's standard MMLU
formulation (question, lettered options, "Answer:"), scored by log-likelihood of the letters.
Each item's id is ``subject/split/row``.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.components import Benchmark, ComponentConfig, Item, ProgressFn
from harness.errors import DataError
from harness.models import LoadedModel
from harness.types import ItemResult

LETTERS = ("A", "B", "C", "D")


class MMLUConfig(ComponentConfig):
    per_subject: int = Field(2, ge=1, description="questions sampled from each subject")
    subjects: list[str] | None = Field(None, description="subset of subjects (default: all 57)")
    split: str = Field("test", pattern="^(test|val|dev)$")
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    path: str = Field("mmlu", description="folder under the data directory")


class MMLU(Benchmark):
    name = "mmlu"
    description = "MMLU 4-choice, seeded subject-stratified sample, via lm-evaluation-harness"
    Config = MMLUConfig
    metric = "accuracy"
    chance = 0.25

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        cfg: MMLUConfig = self.config  # type: ignore[assignment]
        root = self.ctx.data_dir / cfg.path / cfg.split
        if not root.is_dir():
            raise DataError(f"MMLU data not found: {root}")
        files = sorted(root.glob(f"*_{cfg.split}.csv"))
        by_subject = {f.name.removesuffix(f"_{cfg.split}.csv"): f for f in files}
        wanted = cfg.subjects or sorted(by_subject)
        unknown = sorted(set(wanted) - set(by_subject))
        if unknown:
            raise DataError(f"unknown MMLU subject(s) {unknown} in {root}")
        docs: list[dict[str, Any]] = []
        for subject in wanted:
            rows = _read_rows(by_subject[subject])
            ranked = sorted(
                range(len(rows)),
                key=lambda i: hashlib.sha256(f"{cfg.seed}:{subject}:{i}".encode()).hexdigest(),
            )
            for index in sorted(ranked[: cfg.per_subject]):
                question, *options, answer = rows[index]
                docs.append(
                    {
                        "id": f"{subject}/{cfg.split}/{index + 1}",
                        "subject": subject.replace("_", " "),
                        "question": question.strip(),
                        "choices": [o.strip() for o in options],
                        "answer": LETTERS.index(answer.strip()),
                    }
                )
        return docs

    def items(self) -> list[Item]:
        return self.docs

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        from harness_plugins.benchmarks._lmeval import run_task

        cfg: MMLUConfig = self.config  # type: ignore[assignment]
        task = {
            "task": "harness_mmlu_sample",
            "output_type": "multiple_choice",
            "doc_to_text": (
                "The following is a multiple choice question about {{subject}}.\n\n"
                "{{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
                "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
            ),
            "doc_to_choice": list(LETTERS),
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        progress(0, len(items), "log-likelihood of A/B/C/D")
        samples = run_task(model, task, list(items), batch_size=cfg.batch_size, seed=cfg.seed)
        results = []
        for doc, sample in zip(items, samples):
            logliks = [resp[0] for resp in sample["filtered_resps"]]
            predicted = max(range(len(logliks)), key=logliks.__getitem__)
            results.append(
                ItemResult(doc["id"], LETTERS[predicted], LETTERS[doc["answer"]], float(sample["acc"]))
            )
        progress(len(items), len(items), "done")
        return results


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    for line, row in enumerate(rows, start=1):
        if len(row) != 6 or row[5].strip() not in LETTERS:
            raise DataError(f"{path}: record {line}: expected question,A,B,C,D,answer")
    return rows


@harness.hookimpl
def harness_register_benchmarks(registrar) -> None:
    registrar.add(MMLU)
