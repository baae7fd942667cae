"""The runs behind ``train_throughput.py``: one epoch of the HF ``Trainer`` (+ peft) or of our LoRA
and full trainers on the same encoded examples, timed, with the padding each one processed and
its per-step losses (see ``train_throughput.py`` for what is timed and why)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("TQDM_DISABLE", "1")

from harness.lib.data import data_dir
from harness.lib.device import native_bf16
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.training import run as run_module
from harness.lib.training.batching import packing_efficiency, plan_epoch
from harness.lib.training.examples import Example, encode_conversations
from harness.plugin.components import ComponentConfig, RunContext, TrainContext
from harness.types import Conversation
from harness_plugins.backends.hf import HFBackend
from harness_plugins.readers.formats import CsvReader
from harness_plugins.trainers import full as full_module
from harness_plugins.trainers import lora as lora_module
from harness_plugins.trainers.full import FullConfig, FullTrainer
from harness_plugins.trainers.lora import LoRAConfig, LoRATrainer

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
MODEL = "smollm2-135m-instruct"
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
HF_DEFAULT, HF_GROUPED = "HF Trainer", "HF Trainer group_by_length"


@dataclass
class Result:
    """One configuration's epoch."""

    group: str
    name: str
    steps: int
    seconds: float
    cpu_seconds: float
    tokens: int
    padding_share: float
    losses: list[float]
    last_loss: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else math.nan


class Clock:
    """Wall and process CPU time at marks."""

    def __init__(self) -> None:
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        assert self.start is not None and self.end is not None, "the clock was not started and stopped"
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


# --- data and model ------------------------------------------------------------------------------


def read_records(ctx: RunContext) -> list[Conversation]:
    reader = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    return [r for r in reader.read(data_dir() / BITEXT, "bitext") if isinstance(r, Conversation)]


def encode(tokenizer: Any, records: Sequence[Conversation], max_length: int) -> tuple[list[Conversation], list[Example]]:
    """The records that give an example (an assistant token within ``max_length``) and their examples."""
    kept, examples = [], []
    for record in records:
        encoded, _ = encode_conversations(tokenizer, [record], max_length)
        if encoded:
            kept.append(record)
            examples.append(encoded[0])
    return kept, examples


def load(ref: ModelRef, ctx: RunContext) -> LoadedModel:
    return HFBackend(ComponentConfig(), ctx).load(ref, trainable=True)


def free() -> None:
    """Collect what a finished run left (the ``Trainer`` holds reference cycles)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- the HF Trainer ------------------------------------------------------------------------------


class CountingCollator:
    """``DataCollatorForSeq2Seq`` that counts real and padded positions of the batches it makes."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.inner = inner
        self.real = self.positions = self.batches = 0

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.positions += mask.numel()
        self.batches += 1
        return batch


def sampling_args(grouped: bool) -> dict[str, Any]:
    """Length grouping in the spelling of the installed transformers (4.x flag or 5.x strategy)."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "group_by_length" in names:
        return {"group_by_length": grouped}
    return {"train_sampling_strategy": "group_by_length" if grouped else "random"}


def run_hf(
    name: str, group: str, ref: ModelRef, ctx: RunContext, examples: Sequence[Example], args: argparse.Namespace,
    *, lora: bool, grouped: bool,
) -> Result:
    import datasets
    import peft
    import torch
    import transformers
    from transformers.trainer_callback import PrinterCallback

    loaded = load(ref, ctx)
    model = loaded.model
    if lora:
        transformers.set_seed(args.seed)
        config = peft.LoraConfig(
            r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
            target_modules=list(LORA["target_modules"]), task_type="CAUSAL_LM",
        )
        model = peft.get_peft_model(model, config)
    data = datasets.Dataset.from_dict({
        "input_ids": [e.input_ids for e in examples],
        "attention_mask": [[1] * len(e) for e in examples],
        "labels": [e.labels for e in examples],
    })
    collator = CountingCollator(transformers.DataCollatorForSeq2Seq(loaded.tokenizer, label_pad_token_id=-100))
    losses: list[float] = []

    class Losses(transformers.TrainerCallback):
        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory(prefix="tt-hf-") as out:
        training_args = transformers.TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            num_train_epochs=1,
            learning_rate=args.lr if lora else args.full_lr,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            seed=args.seed,
            data_seed=args.seed,
            bf16=native_bf16(),
            use_cpu=not torch.cuda.is_available(),
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            dataloader_num_workers=0,
            disable_tqdm=True,
            label_names=["labels"],
            **sampling_args(grouped),
        )
        trainer = transformers.Trainer(
            model=model, args=training_args, train_dataset=data, data_collator=collator,
            processing_class=loaded.tokenizer, callbacks=[Losses()],
        )
        trainer.remove_callback(PrinterCallback)
        gc.collect()
        clock = Clock()
        clock.start = clock.now()
        output = trainer.train()
        clock.end = clock.now()
    seconds, cpu = clock.elapsed()
    tokens = sum(len(e) for e in examples)
    if collator.real != tokens:
        raise RuntimeError(f"{name}: the HF collator saw {collator.real} real tokens, the examples hold {tokens}")
    result = Result(
        group, name, output.global_step, seconds, cpu, tokens, 1 - collator.real / collator.positions,
        losses, losses[-1] if losses else math.nan,
        {"hf_training_loss": output.training_loss, "optim": str(training_args.optim), "batches": collator.batches},
    )
    del trainer, model, loaded, data
    return result


# --- our trainers --------------------------------------------------------------------------------


def run_ours(
    name: str, group: str, ref: ModelRef, ctx: RunContext, records: Sequence[Conversation],
    examples: Sequence[Example], args: argparse.Namespace, *, lora: bool, batching: str,
) -> Result:
    plan = plan_epoch(
        examples, batch_size=args.batch_size, max_length=args.max_length, strategy=batching,
        seed=args.seed, epoch=0,
    )
    common = {
        "batch_size": args.batch_size, "max_length": args.max_length, "batching": batching, "epochs": 1,
        "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": "auto",
        "eval_every": 0, "save_every": len(plan) + 1,  # no resumable state is written during the epoch
    }
    if lora:
        module: Any = lora_module
        trainer: Any = LoRATrainer(LoRAConfig(**LORA, learning_rate=args.lr, **common), ctx)
    else:
        module = full_module
        trainer = FullTrainer(FullConfig(learning_rate=args.full_lr, **common), ctx)
    loaded = load(ref, ctx)
    clock = Clock()
    prepared: list[Any] = []
    loops: list[Any] = []
    real_prepare, real_run_loop = module.prepare, run_module.run_loop

    def timed_prepare(*a: Any, **kw: Any) -> Any:
        data = real_prepare(*a, **kw)
        prepared.append(data)
        gc.collect()
        clock.start = clock.now()
        return data

    def recording_run_loop(*a: Any, **kw: Any) -> Any:
        result = real_run_loop(*a, **kw)
        loops.append(result)  # LoopResult: the exact per-step losses
        return result

    def progress(_step: int, _total: int, _message: str) -> None:
        clock.end = clock.now()  # after each optimizer step; the last one ends the clock

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(tempfile.TemporaryDirectory(prefix="tt-ours-"))
        stack.enter_context(mock.patch.object(module, "prepare", timed_prepare))
        for owner in (run_module, module):  # lora binds run_loop at import, full at call time
            if hasattr(owner, "run_loop"):
                stack.enter_context(mock.patch.object(owner, "run_loop", recording_run_loop))
        train_ctx = TrainContext(Path(out), args.seed, lambda _event: None, progress, resume=False)
        output = trainer.train(loaded, records, train_ctx)
    seconds, cpu = clock.elapsed()
    mine = prepared[0].examples
    if [(e.input_ids, e.labels) for e in mine] != [(e.input_ids, e.labels) for e in examples]:
        raise RuntimeError(f"{name}: the trainer encoded other tokens than the HF side gets")
    if output.steps != len(plan):
        raise RuntimeError(f"{name}: {output.steps} steps, the plan has {len(plan)} batches")
    result = Result(
        group, name, output.steps, seconds, cpu, sum(len(e) for e in examples),
        1 - packing_efficiency(examples, plan), list(loops[0].losses), output.last_loss,
        {
            "train_output_seconds": output.seconds, "loop_seconds": loops[0].seconds,
            "rows": sum(len(batch) for batch in plan),
        },
    )
    prepared.clear()
    loops.clear()
    del trainer, loaded, output
    return result
