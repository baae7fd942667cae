"""Run a locally defined lm-evaluation-harness task on an in-memory model and return per-sample
records.

The model is any backend's :class:`~harness.lib.model_api.ModelAPI`: its ``lm_eval_model`` gives
lm-eval an ``LM`` (the ``hf`` backend hands over an in-memory ``HFLM``; other backends the
generic :class:`ModelAPILM` adapter).  The benchmark plugins build their items (a seeded sample of real data), write them as JSONL into
a private temporary folder and hand lm-eval a task config with an *absolute* ``data_files`` path
(lm-eval resolves relative ones against the working directory).  The model is passed as an
in-memory ``HFLM``, so it is loaded once per run, not once per task.

lm-eval's ``TaskManager`` indexes every task YAML it ships when it is built (about 14,000 files,
11 s of a 12.6 s call that generates 8 answers with SmolLM2 on a 2-core CPU).  ``simple_evaluate``
builds a new one on each call unless given one, and the evaluate stage calls it once per chunk of
items, so that index cost every chunk.  A task config here is self-contained (a dict, with its own
data file), so it is run with one manager per process that indexes nothing (``include_defaults``
off); a config that ``include``s one of lm-eval's own tasks gets one that indexes them, built
once per process as well.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import CheckError, require
from harness.lib.model_api import GenerationConfig, ModelAPI, model_api
from harness.lib.models import LoadedModel


def _quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without its ``git describe`` subprocess, whose
    ``fatal: not a git repository`` lands on our stderr outside a checkout: the commit is read
    from the working directory's ``.git`` files, as lm-eval itself falls back to."""
    from lm_eval.loggers.utils import get_commit_from_path

    commit: str | None = get_commit_from_path(os.getcwd())
    return commit


def silence_git_lookup(evaluator_module: Any) -> None:
    """Make lm-eval's results header read the git commit quietly (see ``_quiet_git_hash``)."""
    evaluator_module.get_git_commit_hash = _quiet_git_hash


@lru_cache(maxsize=2)
def task_manager(include_defaults: bool) -> Any:
    """One lm-eval ``TaskManager`` per process (see the module's doc for why)."""
    tasks = require("lm_eval.tasks")
    return tasks.TaskManager(verbosity="ERROR", include_defaults=include_defaults)


def run_task(
    model: LoadedModel,
    task: dict[str, Any],
    docs: list[dict[str, Any]],
    *,
    batch_size: int = 8,
    apply_chat_template: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Evaluate ``docs`` with the lm-eval ``task`` config; return samples ordered by ``doc_id``."""
    lm_eval = require("lm_eval")
    require("datasets").disable_progress_bars()
    silence_git_lookup(require("lm_eval.evaluator"))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for noisy in ("lm_eval", "lm-eval"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="harness-lmeval-") as tmp:
        data_file = Path(tmp) / "docs.jsonl"
        with data_file.open("w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
        config = {
            **task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data_file)}},
            "test_split": "test",
        }
        api = model_api(model)
        lm = api.lm_eval_model(batch_size) or model_api_lm(api, batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[config],
            task_manager=task_manager("include" in task),
            log_samples=True,
            apply_chat_template=apply_chat_template,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
    if not results or task["task"] not in results.get("samples", {}):
        raise CheckError(f"lm-eval returned no samples for task {task['task']!r}")
    samples = sorted(results["samples"][task["task"]], key=lambda s: s["doc_id"])
    if len(samples) != len(docs):
        raise CheckError(f"lm-eval scored {len(samples)} of {len(docs)} items of {task['task']!r}")
    return samples


def model_api_lm(api: ModelAPI, batch_size: int) -> Any:
    """An lm-eval ``LM`` over any :class:`ModelAPI`, for backends without a native lm-eval model."""
    base = require("lm_eval.api.model").LM

    class ModelAPILM(base):  # type: ignore[misc, valid-type]
        """lm-eval's three request types, answered by the model API in one batch each."""

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            return api.loglikelihood([req.args for req in requests], batch_size)

        def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
            return api.loglikelihood_rolling([req.args[0] for req in requests], batch_size)

        def generate_until(self, requests: list[Any]) -> list[str]:
            """Requests with the same generation settings go to the model API in one batch."""
            groups: dict[str, list[int]] = {}
            for i, req in enumerate(requests):
                groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
            out: list[str] = [""] * len(requests)
            for indices in groups.values():
                config = _generation(requests[indices[0]].args[1], batch_size)
                for i, text in zip(indices, api.generate([requests[i].args[0] for i in indices], config)):
                    out[i] = text
            return out

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return api.render_chat(chat_history, add_generation_prompt)

        @property
        def tokenizer_name(self) -> str:
            return type(api).__name__

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return type(api).__name__ if chat_template else None

    return ModelAPILM()


def _generation(kwargs: dict[str, Any], batch_size: int) -> GenerationConfig:
    """lm-eval's ``generation_kwargs`` as a :class:`GenerationConfig`."""
    until = kwargs.get("until") or []
    sampled = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 1.0)) > 0
    return GenerationConfig(
        max_new_tokens=int(kwargs.get("max_gen_toks", 256)),
        temperature=float(kwargs.get("temperature", 1.0)) if sampled else 0.0,
        top_p=float(kwargs.get("top_p", 1.0)),
        stop=tuple([until] if isinstance(until, str) else until),
        batch_size=batch_size,
    )
