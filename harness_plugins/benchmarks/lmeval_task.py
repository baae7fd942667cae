"""Any lm-evaluation-harness task defined in a suite over a local data file.

The suite gives the task's own lm-eval config (``output_type``, ``doc_to_text``,
``doc_to_choice``, ``doc_to_target``, ``metric_list``, ``generation_kwargs``...) and a JSONL or
CSV file; the harness supplies the dataset fields (an absolute ``data_files`` path, which lm-eval
needs) and reads the file itself, so every row is an item with a stable id and the per-sample
metric named by ``metric`` becomes the per-item score::

    evaluate:
      arithmetic:
        name: lm_eval_task
        data_file: ${data}/my_task/test.jsonl
        id_field: id
        metric: acc
        task:
          output_type: multiple_choice
          doc_to_text: "Question: {{question}}\\nAnswer:"
          doc_to_choice: "{{choices}}"
          doc_to_target: answer
          metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, item_id, ProgressFn, RunContext
from harness.lib.data import csv_rows, read_jsonl_objects, resolve_data_path, seeded_sample
from harness.errors import DataError
from harness.lib.models import LoadedModel
from harness.types import ItemResult
from harness.plugin.registry import Registrar

_DATASET_KEYS = {"task", "dataset_path", "dataset_name", "dataset_kwargs", "test_split", "validation_split", "training_split"}


class LmEvalTaskConfig(ComponentConfig):
    task: dict[str, Any] = Field(description="the lm-eval task config, without its dataset fields")
    data_file: str = Field(description="JSONL or CSV; relative to the suite, or '${data}/...'")
    id_field: str | None = Field(None, description="row field holding a unique id (default: the line)")
    metric: str = Field("acc", description="per-sample metric used as the per-item score")
    sample: int | None = Field(None, ge=1, description="a seeded sample of this many rows")
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    apply_chat_template: bool = False

    @field_validator("task")
    @classmethod
    def _no_dataset_fields(cls, task: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_DATASET_KEYS & set(task))
        if clash:
            raise ValueError(f"the harness sets {clash} itself; give the data as data_file")
        if "output_type" not in task:
            raise ValueError("the task needs an output_type")
        return task


class LmEvalTask(Benchmark[LmEvalTaskConfig]):
    name = "lm_eval_task"
    description = "any lm-evaluation-harness task config over a local JSONL/CSV file, per-item scores"
    Config = LmEvalTaskConfig

    def __init__(self, config: LmEvalTaskConfig, ctx: RunContext) -> None:
        super().__init__(config, ctx)
        self.metric = config.metric  # the configured metric, per instance

    def required_capabilities(self) -> tuple[str, ...]:
        """Generation for ``generate_until`` tasks, log-likelihoods for the others; chat when the
        chat template is applied."""
        cfg = self.config
        kind = "generate" if cfg.task["output_type"] == "generate_until" else "loglikelihood"
        return (kind, "chat") if cfg.apply_chat_template else (kind,)

    def _path(self) -> Path:
        return resolve_data_path(self.config.data_file, self.ctx.suite_dir)

    @cached_property
    def docs(self) -> list[Item]:
        cfg = self.config
        path = self._path()
        if not path.is_file():
            raise DataError(f"lm_eval_task data file not found: {path}")
        rows = _read_rows(path)
        if not rows:
            raise DataError(f"{path}: no rows")
        items = []
        for line, row in rows:
            if cfg.id_field is not None and cfg.id_field not in row:
                raise DataError(f"{path}:{line}: no field {cfg.id_field!r}")
            ident = str(row[cfg.id_field]) if cfg.id_field else f"{path.name}:{line}"
            items.append({"id": ident, "doc": row})
        if len({item_id(i) for i in items}) != len(items):
            raise DataError(f"{path}: the ids in {cfg.id_field!r} are not unique")
        return seeded_sample(items, cfg.sample, cfg.seed, key=item_id)

    def items(self) -> list[Item]:
        return self.docs

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        from harness.lib.lmeval import run_task

        cfg = self.config
        task = {**cfg.task, "task": "harness_local_task"}
        progress(0, len(items), "lm-evaluation-harness")
        samples = run_task(
            model, task, [i["doc"] for i in items], batch_size=cfg.batch_size,
            apply_chat_template=cfg.apply_chat_template, seed=cfg.seed,
        )
        results = []
        for item, sample in zip(items, samples):
            if cfg.metric not in sample:
                known = sorted(k for k, v in sample.items() if isinstance(v, (int, float)) and k != "doc_id")
                raise DataError(f"lm-eval reported no per-sample {cfg.metric!r}; it has {known}")
            prediction = json.dumps(sample.get("filtered_resps"), default=str)[:500]
            reference = str(sample.get("target", ""))
            results.append(ItemResult(item_id(item), prediction, reference, float(sample[cfg.metric])))
        progress(len(items), len(items), "done")
        return results


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if path.suffix != ".csv":
        return read_jsonl_objects(path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv_rows(fh)
        header = next(rows, (1, []))[1]
        return [(line, dict(zip(header, values))) for line, values in rows]


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(LmEvalTask)
