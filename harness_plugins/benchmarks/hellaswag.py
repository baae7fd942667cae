"""HellaSwag (Zellers et al., 2019): commonsense sentence completion, 4-way multiple choice.

Items are a seeded random sample of the 10,042 validation records (``hellaswag/<idx>``).  Each is
scored as lm-evaluation-harness's ``hellaswag`` task scores it: the context is the query
``"<activity label>: <context>"``, every ending is a continuation after a space, and the model
picks the ending with the highest log-likelihood (``acc``) or the highest log-likelihood per
character of the ending (``acc_norm``, lm-eval's length normalisation).  ``metric`` chooses which
of the two is the per-item score the gates compare; ``summary()`` reports both, from each
result's prediction ``acc_norm=<i>,acc=<j>`` (the ending each rule picked) and its reference (the
gold ending), so cached results give both figures too.

The data file holds the strings already cleaned as lm-eval cleans them, except for one step:
lm-eval builds the context as ``ctx_a + " " + ctx_b.capitalize()``, and the file keeps ``ctx_b``
in lower case without saying where it starts.  ``ctx_b`` is the unfinished sentence at the end
of the context, so when the context ends with a fragment that starts in lower case after the last
sentence end, that fragment is capitalised (``"A man is sitting on a roof. he"`` becomes
``"... roof. He"``).  lm-eval's cleaning is then applied once more, which also drops the few
bracketed wikiHow artefacts the file still contains.

``engine`` picks who computes the log-likelihoods: ``native`` (the ``hf`` backend's packed scorer:
the context once, the four endings after it, same numbers as lm-eval) or ``lm_eval``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, item_id, ProgressFn, RunContext
from harness.lib.data import read_jsonl_objects, seeded_sample
from harness.errors import DataError
from harness.lib.models import LoadedModel
from harness.types import ItemResult
from harness.plugin.registry import Registrar

_UNFINISHED = re.compile(r"(?:^|[.!?]\s+)([a-z][^.!?]*)$")


class HellaSwagConfig(ComponentConfig):
    sample: int = Field(200, ge=1, description="validation records drawn at random (seeded)")
    seed: int = Field(0, description="seed of the sample")
    metric: Literal["acc_norm", "acc"] = Field(
        "acc_norm", description="per-item score: length-normalised (acc_norm) or raw (acc) choice"
    )
    engine: Literal["native", "lm_eval"] = Field(
        "native", description="log-likelihoods from the native packed scorer or from lm-eval's HFLM"
    )
    batch_size: int = Field(8, ge=1, description="rows per forward pass (native: items; lm_eval: endings)")
    path: str = Field("hellaswag/hellaswag_val.jsonl", description="JSONL under the data directory")


class HellaSwag(Benchmark[HellaSwagConfig]):
    name = "hellaswag"
    description = "HellaSwag validation, seeded sample, 4 endings scored by log-likelihood"
    Config = HellaSwagConfig
    needs = ("loglikelihood",)
    metric = "acc_norm"
    chance = 0.25

    def __init__(self, config: HellaSwagConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.metric = config.metric  # the configured accuracy, per instance

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        cfg = self.config
        path = self.ctx.data_path(cfg.path, "HellaSwag data")
        records = _read_records(path)
        chosen = seeded_sample(records, cfg.sample, cfg.seed, key=lambda r: str(r["idx"]))
        self._activities = {f"hellaswag/{r['idx']}": str(r["activity_label"]) for r in chosen}
        return [_doc(r) for r in sorted(chosen, key=lambda r: r["idx"])]

    def items(self) -> list[Item]:
        return self.docs

    def clusters(self) -> dict[str, str]:
        """Item id -> source activity (``activity_label``): contexts of one activity share
        their wording and difficulty, so the gates treat them as one cluster."""
        self.docs  # noqa: B018  # fills the activity map
        return dict(self._activities)

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        cfg = self.config
        progress(0, len(items), "log-likelihood of the endings")
        results = []
        for doc, logliks in zip(items, self.loglikelihoods(model, items)):
            picks = predictions(logliks, doc["choices"])
            prediction = f"acc_norm={picks['acc_norm']},acc={picks['acc']}"
            score = float(picks[cfg.metric] == doc["label"])
            results.append(ItemResult(item_id(doc), prediction, str(doc["label"]), score))
        progress(len(items), len(items), "done")
        return results

    def loglikelihoods(self, model: LoadedModel, items: Sequence[Item]) -> list[list[float]]:
        """Log-likelihood of each ending (after a space) given the query, from the engine."""
        cfg = self.config
        if cfg.engine == "native":
            from harness.lib.model_api import model_api

            requests = [(doc["query"], [f" {c}" for c in doc["choices"]]) for doc in items]
            scored = model_api(model).choice_loglikelihoods(requests, batch_size=cfg.batch_size)
            return [[loglik for loglik, _ in row] for row in scored]
        from harness.lib.lmeval import run_task

        samples = run_task(model, LMEVAL_TASK, list(items), batch_size=cfg.batch_size, seed=cfg.seed)
        return [[resp[0] for resp in sample["filtered_resps"]] for sample in samples]

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """Both accuracies, whatever ``metric`` the per-item scores use."""
        if not results:
            return {"acc": float("nan"), "acc_norm": float("nan")}
        hits = {"acc": 0, "acc_norm": 0}
        for r in results:
            picks = dict(part.split("=") for part in r.prediction.split(","))
            for key in hits:
                hits[key] += picks[key] == r.reference
        return {key: hits[key] / len(results) for key in ("acc_norm", "acc")}


LMEVAL_TASK: dict[str, Any] = {
    "task": "harness_hellaswag_sample",
    "output_type": "multiple_choice",
    "doc_to_text": "{{query}}",
    "doc_to_choice": "choices",
    "doc_to_target": "{{label}}",
    "metric_list": [
        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
    ],
}
"""lm-eval's ``hellaswag`` task over our already prepared docs."""


def predictions(logliks: Sequence[float], choices: Sequence[str]) -> dict[str, int]:
    """The ending picked by ``acc`` (highest log-likelihood) and by ``acc_norm`` (highest
    log-likelihood per character of the ending); ties go to the first, as ``numpy.argmax``."""
    norm = [loglik / len(choice) for loglik, choice in zip(logliks, choices)]
    return {
        "acc": max(range(len(logliks)), key=logliks.__getitem__),
        "acc_norm": max(range(len(norm)), key=norm.__getitem__),
    }


def preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleaning (``tasks/hellaswag/utils.py``)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def capitalize_unfinished(ctx: str) -> str:
    """Capitalise the trailing lower-case fragment (lm-eval's ``ctx_b.capitalize()``)."""
    match = _UNFINISHED.search(ctx)
    if match is None:
        return ctx
    return ctx[: match.start(1)] + match.group(1).capitalize()


def _doc(record: dict[str, Any]) -> dict[str, Any]:
    query = f"{record['activity_label']}: {capitalize_unfinished(record['ctx'])}"
    return {
        "id": f"hellaswag/{record['idx']}",
        "query": preprocess(query),
        "choices": [preprocess(ending) for ending in record["endings"]],
        "label": int(record["label"]),
    }


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line_no, record in read_jsonl_objects(path):
        try:
            valid = len(record["endings"]) == 4 and int(record["label"]) in range(4)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{line_no}: not a HellaSwag record ({exc})") from exc
        if not valid:
            raise DataError(f"{path}:{line_no}: expected 4 endings and a label 0-3")
        records.append(record)
    if not records:
        raise DataError(f"{path}: no records")
    return records


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(HellaSwag)
