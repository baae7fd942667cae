"""Training throughput of our LoRA and full trainers against the Hugging Face ``Trainer`` (+ peft).

Same model (the embedded SmolLM2-135M-Instruct, float32 master weights, bf16 autocast only where the
hardware runs bf16 natively, on both sides), same data and same hyperparameters, one epoch each:

* data: a seeded sample of ``--examples`` Bitext customer-support conversations (user =
  instruction, assistant = response), read with the project's CSV reader and encoded once with
  ``harness.lib.training.examples.encode_conversations`` (chat template, loss on the assistant turns,
  cut to ``--max-length`` tokens).  The HF side trains on exactly those ``input_ids`` and
  ``labels``; for ours the script checks that the examples the trainer encodes itself are the
  same, token for token.  Responses vary a lot in length, so padding matters;
* hyperparameters: LoRA r=8, alpha 16, dropout 0.05 on q_proj/v_proj; AdamW (no weight decay,
  clip 1.0), lr 2e-4 with a linear schedule and no warmup (full fine-tuning: ``--full-lr``,
  default 1e-5, our ``full`` trainer's default); ``--batch-size`` rows per optimizer step, no
  gradient accumulation; seed fixed.  The HF optimizer is the ``TrainingArguments`` default
  (``adamw_torch_fused`` in transformers 5), ours ``torch.optim.AdamW``: the same algorithm;
* rows (LoRA): HF ``Trainer`` with ``DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)``
  and random batches (its default), HF with length grouping (``group_by_length``; in transformers
  5 ``train_sampling_strategy="group_by_length"``: HF's own best), and ``LoRATrainer`` with each
  batching strategy (``pad``, ``length_grouped``, ``packed``).  Then full fine-tuning, on
  ``--full-examples`` of the same sample: HF (default and length-grouped) against ``FullTrainer``
  (``full``, in this process) with ``length_grouped`` and ``packed``.  ``full_fsdp`` (torchrun)
  is not run: on one CPU it only adds process start-up and collectives.

What is timed (wall clock, and this process's CPU seconds beside it, the steadier figure on a
shared machine): for HF, ``trainer.train()`` alone (sampler and dataloader set-up, optimizer
creation and the epoch; the peft wrapping and ``Trainer`` construction are outside); for ours,
from the moment the trainer's own encoding (``prepare``) returns to the end of its last optimizer
step (so peft wrapping, optimizer creation, the batch plan and the epoch; the encoding before and
the final save of the adapter/model after are outside; ``TrainOutput.seconds``, which includes
both, is in the JSON).  Nothing is written during the timed epoch on either side: HF runs with
``save_strategy="no"``, ours with ``save_every`` above the number of steps and ``eval_every=0``
(no resumable state, no intermediate checkpoint).  HF logs every step (``logging_steps=1``, to
record the per-step loss; its console printer is removed); ours reports progress every step, and its
per-step losses are read from the loop's result (``LoopResult.losses``).

Figures: optimizer steps; seconds; real tokens per second = the tokens of the epoch's examples
(no padding) / seconds, the same numerator for every row of a group; padding share = padded
positions / all positions the forward passes processed (HF: counted in its collator; ours: from
the batch plan, rows padded to the longest row of their batch); speedup = HF seconds / seconds
against the HF default row and the HF length-grouped row; the mean of the per-step training losses
over the epoch and the last step's loss (they should be close between rows of one group, learning
alike; ``packed`` takes fewer, fuller steps, so its losses are not directly comparable).

Each configuration loads the model afresh (no run sees another's trained weights), in its own
temporary output folder, ours with ``resume=False``; memory is freed between runs.  An untimed
warm-up (one HF step and one of ours on a single batch) goes first, so lazy imports and first-call
costs land in no row.

Caveats: one epoch over a small sample, on the CPU (fp32 where bf16 is not native), one run per
configuration, in turn: on a machine shared with other work, load changes between rows show up
as noise (compare the CPU seconds too, though they also grow when the machine is oversubscribed:
OpenMP threads spin while they wait for each other), and small speedups are not significant.  HF's
``group_by_length`` sorts within mega-batches of ``min(50, n // (4 * batch))`` batches, ours within
50 batches: on a small sample HF groups much less (that is its heuristic, not a bug here).

    python benchmarks/train_throughput.py [--examples 96] [--full-examples 32] [--max-length 256]
        [--batch-size 8] [--skip-full] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
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

from harness.lib.device import native_bf16
from harness_plugins.backends.hf import HFBackend
from harness_plugins.readers.formats import CsvReader
from harness_plugins.trainers import full as full_module
from harness_plugins.trainers import lora as lora_module
from harness_plugins.trainers.full import FullConfig, FullTrainer
from harness_plugins.trainers.lora import LoRAConfig, LoRATrainer

from harness.plugin.components import ComponentConfig, RunContext, TrainContext
from harness.lib.data import data_dir, seeded_sample
from harness.lib.models import LoadedModel, ModelRef, resolve_model
from harness.lib.training import run as run_module
from harness.lib.training.batching import packing_efficiency, plan_epoch
from harness.lib.training.examples import Example, encode_conversations
from harness.types import Conversation

BITEXT = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
MODEL = "smollm2-135m-instruct"
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
HF_DEFAULT, HF_GROUPED = "HF Trainer", "HF Trainer group_by_length"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=96, help="conversations for the LoRA rows")
    parser.add_argument("--full-examples", type=int, default=32, help="conversations for full fine-tuning")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="rows per optimizer step")
    parser.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate")
    parser.add_argument("--full-lr", type=float, default=1e-5, help="full fine-tuning learning rate")
    parser.add_argument("--skip-full", action="store_true", help="LoRA rows only")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON")
    return parser.parse_args()


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
        examples, batch_size=args.batch_size, max_length=args.max_length, strategy=batching,  # type: ignore[arg-type]
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


# --- report --------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> list[str]:
    head = (
        f"{'configuration':34s} {'steps':>5s} {'wall s':>8s} {'cpu s':>8s} {'tok/s':>8s} {'padding':>8s} "
        f"{'vs HF':>6s} {'vs HF gbl':>9s} {'mean loss':>9s} {'last loss':>9s}"
    )
    lines = [head, "-" * len(head)]
    for group in dict.fromkeys(r.group for r in results):
        rows = [r for r in results if r.group == group]
        base = {r.name: r for r in rows}
        default, grouped = base.get(HF_DEFAULT), base.get(HF_GROUPED)
        lines.append(f"[{group}]")
        for r in rows:
            vs = f"{default.seconds / r.seconds:5.2f}x" if default else "-"
            vs_grouped = f"{grouped.seconds / r.seconds:8.2f}x" if grouped else "-"
            lines.append(
                f"{r.name:34s} {r.steps:5d} {r.seconds:8.1f} {r.cpu_seconds:8.1f} {r.tokens_per_second:8.1f} "
                f"{r.padding_share:7.1%} {vs:>6s} {vs_grouped:>9s} {r.mean_loss:9.3f} {r.last_loss:9.3f}"
            )
    return lines


def verdict(results: Sequence[Result]) -> str:
    lora = {r.name: r for r in results if r.group.startswith("LoRA")}
    ours = [r for r in lora.values() if r.name.startswith("ours")]
    if HF_DEFAULT not in lora or not ours:
        return "LoRA target: not measured"
    best = min(ours, key=lambda r: r.seconds)
    speedup = lora[HF_DEFAULT].seconds / best.seconds
    grouped = lora[HF_GROUPED].seconds / best.seconds if HF_GROUPED in lora else math.nan
    cpu = lora[HF_DEFAULT].cpu_seconds / best.cpu_seconds
    return (
        f"LoRA target (spec): ours best ({best.name}) vs HF Trainer default >= 1.3x: {speedup:.2f}x "
        f"{'PASS' if speedup >= 1.3 else 'FAIL'} (CPU seconds: {cpu:.2f}x); "
        f"vs HF group_by_length: {grouped:.2f}x {'PASS' if grouped >= 1.3 else 'FAIL'}"
    )


def main() -> None:
    args = parse_args()
    import peft
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    ctx = RunContext(Path.cwd(), Path.cwd(), args.seed)
    ref = resolve_model(MODEL, "hf", "auto", Path.cwd())
    records = read_records(ctx)
    probe = load(ref, ctx)
    tokenizer = probe.tokenizer
    del probe
    free()
    lora_records, lora_examples = encode(
        tokenizer, seeded_sample(records, args.examples, args.seed, key=lambda r: r.source_id), args.max_length
    )
    full_records, full_examples = encode(
        tokenizer, seeded_sample(records, args.full_examples, args.seed, key=lambda r: r.source_id), args.max_length
    )
    lengths = sorted(len(e) for e in lora_examples)
    precision = "bf16 autocast" if native_bf16() else "fp32"
    print(
        f"SmolLM2-135M-Instruct, {precision}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, {torch.get_num_threads()} threads, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    print(
        f"Bitext: {len(lora_examples)} examples for LoRA ({sum(lengths)} tokens, length min/median/max "
        f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}, "
        f"{sum(n >= args.max_length for n in lengths)} cut to {args.max_length}), "
        f"{len(full_examples)} for full fine-tuning; batch {args.batch_size}, one epoch, seed {args.seed}",
        flush=True,
    )

    if not args.no_warmup:
        run_hf("warm-up", "warm-up", ref, ctx, lora_examples[: args.batch_size], args, lora=True, grouped=False)
        free()
        run_ours(
            "warm-up", "warm-up", ref, ctx, lora_records[: args.batch_size], lora_examples[: args.batch_size],
            args, lora=True, batching="pad",
        )
        free()

    group = f"LoRA r={LORA['r']}, {len(lora_examples)} examples"
    plan: list[tuple[str, Callable[[], Result]]] = [
        (HF_DEFAULT, lambda: run_hf(HF_DEFAULT, group, ref, ctx, lora_examples, args, lora=True, grouped=False)),
        (HF_GROUPED, lambda: run_hf(HF_GROUPED, group, ref, ctx, lora_examples, args, lora=True, grouped=True)),
    ]
    for batching in ("pad", "length_grouped", "packed"):
        plan.append((
            f"ours lora {batching}",
            lambda b=batching: run_ours(
                f"ours lora {b}", group, ref, ctx, lora_records, lora_examples, args, lora=True, batching=b
            ),
        ))
    if not args.skip_full:
        full_group = f"full fine-tuning, {len(full_examples)} examples"
        plan += [
            (HF_DEFAULT, lambda: run_hf(HF_DEFAULT, full_group, ref, ctx, full_examples, args, lora=False, grouped=False)),
            (HF_GROUPED, lambda: run_hf(HF_GROUPED, full_group, ref, ctx, full_examples, args, lora=False, grouped=True)),
        ]
        for batching in ("length_grouped", "packed"):
            plan.append((
                f"ours full {batching}",
                lambda b=batching: run_ours(
                    f"ours full {b}", full_group, ref, ctx, full_records, full_examples, args, lora=False, batching=b
                ),
            ))

    results = []
    for name, run in plan:
        result = run()
        free()
        results.append(result)
        print(
            f"  done: {result.group} / {name}: {result.steps} steps, {result.seconds:.1f} s "
            f"(cpu {result.cpu_seconds:.1f} s)",
            flush=True,
        )

    print()
    print("\n".join(table(results)))
    print()
    print(
        "wall s: training only (HF: trainer.train(); ours: after encoding, up to the last optimizer step, "
        "final save excluded); tok/s: real tokens of the epoch / wall s; padding: padded / processed positions"
    )
    print(verdict(results))
    if args.json:
        payload = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "precision": precision,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
            "results": [
                {**dataclasses.asdict(r), "mean_loss": r.mean_loss, "tokens_per_second": r.tokens_per_second}
                for r in results
            ],
            "verdict": verdict(results),
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
