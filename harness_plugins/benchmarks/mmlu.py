"""MMLU (Hendrycks et al.) on the real CSVs, scored as lm-evaluation-harness scores it.

A fixed, seeded, subject-stratified sample: ``per_subject`` questions from each of the 57 subjects
(or the listed ``subjects``) of the chosen split.  The prompt is lm-eval's standard MMLU
formulation (question, lettered options, "Answer:"), scored by log-likelihood of the letters.
Each item's id is ``subject/split/row``.

``engine`` picks who computes the log-likelihoods: ``native`` (the ``hf`` backend's packed scorer,
one forward pass per question, same numbers as lm-eval) or ``lm_eval`` (lm-evaluation-harness's own
``HFLM`` through ``simple_evaluate``).  Both see the same prompt and continuations " A".." D".
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, item_id, ProgressFn
from harness.lib.data import seeded_sample
from harness.errors import DataError
from harness.lib.models import LoadedModel
from harness.types import ItemResult
from harness.plugin.registry import Registrar

LETTERS = ("A", "B", "C", "D")


class MMLUConfig(ComponentConfig):
    per_subject: int = Field(2, ge=1, description="questions sampled from each subject")
    subjects: list[str] | None = Field(None, description="subset of subjects (default: all 57)")
    split: str = Field("test", pattern="^(test|val|dev)$")
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    path: str = Field("mmlu", description="folder under the data directory")
    engine: Literal["native", "lm_eval"] = Field(
        "native", description="log-likelihoods from the native packed scorer or from lm-eval's HFLM"
    )


class MMLU(Benchmark[MMLUConfig]):
    name = "mmlu"
    description = "MMLU 4-choice, seeded subject-stratified sample, log-likelihood of the letters"
    Config = MMLUConfig
    needs = ("loglikelihood",)
    metric = "accuracy"
    chance = 0.25

    def clusters(self) -> dict[str, str]:
        """Item id -> subject (the id's first part): questions of one subject are one cluster."""
        return {item_id(i): item_id(i).split("/", 1)[0] for i in self.items()}

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        cfg = self.config
        root = self.ctx.data_path(f"{cfg.path}/{cfg.split}", "MMLU data")
        files = sorted(root.glob(f"*_{cfg.split}.csv"))
        by_subject = {f.name.removesuffix(f"_{cfg.split}.csv"): f for f in files}
        wanted = cfg.subjects or sorted(by_subject)
        unknown = sorted(set(wanted) - set(by_subject))
        if unknown:
            raise DataError(f"unknown MMLU subject(s) {unknown} in {root}")
        docs: list[dict[str, Any]] = []
        for subject in wanted:
            rows = _read_rows(by_subject[subject])
            chosen = seeded_sample(range(len(rows)), cfg.per_subject, cfg.seed, key=lambda i: f"{subject}:{i}")
            for index in chosen:
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
        progress(0, len(items), "log-likelihood of A/B/C/D")
        results = []
        for doc, logliks in zip(items, self.loglikelihoods(model, items)):
            predicted = max(range(len(logliks)), key=logliks.__getitem__)
            score = float(predicted == doc["answer"])
            results.append(ItemResult(item_id(doc), LETTERS[predicted], LETTERS[doc["answer"]], score))
        progress(len(items), len(items), "done")
        return results

    def loglikelihoods(self, model: LoadedModel, items: Sequence[Item]) -> list[list[float]]:
        """Log-likelihood of " A".." D" after each item's prompt, from the configured engine."""
        cfg = self.config
        if cfg.engine == "native":
            from harness.lib.model_api import model_api

            requests = [(prompt(doc), [f" {letter}" for letter in LETTERS]) for doc in items]
            scored = model_api(model).choice_loglikelihoods(requests, batch_size=cfg.batch_size)
            return [[loglik for loglik, _ in row] for row in scored]
        from harness.lib.lmeval import run_task

        samples = run_task(model, LMEVAL_TASK, list(items), batch_size=cfg.batch_size, seed=cfg.seed)
        return [[resp[0] for resp in sample["filtered_resps"]] for sample in samples]


def prompt(doc: Item) -> str:
    """The zero-shot prompt: lm-eval's MMLU ``doc_to_text`` (``LMEVAL_TASK``), rendered here."""
    a, b, c, d = doc["choices"]
    return (
        f"The following is a multiple choice question about {doc['subject']}.\n\n"
        f"{doc['question']}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"
    )


LMEVAL_TASK: dict[str, Any] = {
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


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    for line, row in enumerate(rows, start=1):
        if len(row) != 6 or row[5].strip() not in LETTERS:
            raise DataError(f"{path}: record {line}: expected question,A,B,C,D,answer")
    return rows


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(MMLU)
