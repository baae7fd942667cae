"""Run a locally defined lm-evaluation-harness task on an in-memory model and return per-sample
records.

The benchmark plugins build their items (a seeded sample of real data), write them as JSONL into
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
    huggingface = require("lm_eval.models.huggingface")
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
        lm = huggingface.HFLM(
            pretrained=model.model,
            tokenizer=model.tokenizer,
            batch_size=batch_size,
            device=str(model.model.device),
        )
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
