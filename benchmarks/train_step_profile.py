"""Profile one LoRA (or full fine-tuning) optimizer step of ours against the HF ``Trainer`` on the
same batch, with the torch profiler, and print where the time goes.

Both sides train the embedded SmolLM2-135M-Instruct on the same ``--batch-size`` Bitext
conversations (the HF side gets them through ``DataCollatorForSeq2Seq``, ours through ``collate``,
padded to the same width), bf16 autocast where the hardware runs bf16 natively.  Each side does
``--warmup`` untimed steps, then ``--steps`` profiled ones; the phases are marked with
``record_function``: ``forward`` (the model and its loss), ``loss`` (the part of ``forward``
from the last hidden state or the logits on: head, cross-entropy, the gradients a fused loss makes), ``backward``,
``optimizer`` (clipping, AdamW, scheduler, zeroing) and ``data`` (collation and the copy to the
device).  Then the heaviest operators, and the dtype casts (``aten::_to_copy``/``aten::copy_``)
each side makes.  The findings are summed up in ``train_throughput.py``'s docstring.

    python benchmarks/train_step_profile.py [--full] [--batch-size 8] [--steps 2] [--ours-only]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

PHASES = ("data", "forward", "loss", "backward", "optimizer")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    parser.add_argument("--ours-only", action="store_true")
    parser.add_argument("--hf-first", action="store_true", help="profile the HF side first")
    parser.add_argument("--top", type=int, default=18, help="operators listed per side")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def marked(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    def wrapper(*a: Any, **kw: Any) -> Any:
        with torch.profiler.record_function(name):
            return fn(*a, **kw)

    return wrapper


def summarize(title: str, prof: Any, steps: int, top: int) -> None:
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    print(f"\n=== {title}: per step (ms), {steps} steps profiled ===")
    total = 0.0
    for phase in PHASES:
        event = by_name.get(phase)
        ms = event.cpu_time_total / 1000 / steps if event else 0.0
        total += 0.0 if phase == "loss" else ms  # within forward
        print(f"  {phase:10s} {ms:9.1f}{'  (within forward)' if phase == 'loss' else ''}")
    print(f"  {'sum':10s} {total:9.1f}")
    casts = [e for e in events if e.key in ("aten::_to_copy", "aten::copy_", "aten::to")]
    for e in casts:
        print(f"  {e.key:22s} calls/step {e.count // steps:6d}  self ms/step {e.self_cpu_time_total / 1000 / steps:8.1f}")
    print("  top operators by self CPU time (ms/step):")
    ops = sorted((e for e in events if e.key not in PHASES), key=lambda e: -e.self_cpu_time_total)[:top]
    for e in ops:
        print(f"    {e.key:55s} {e.self_cpu_time_total / 1000 / steps:8.1f}  ({e.count // steps} calls)")


def profile(run_step: Callable[[], None], warmup: int, steps: int) -> Any:
    import torch

    for _ in range(warmup):
        run_step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run_step()
    return prof


def ours(args: argparse.Namespace, model: Any, tokenizer: Any, examples: Sequence[Any], bf16: bool) -> Any:
    import torch

    from harness.lib.training import batching
    from harness.lib.training import loop as loop_module
    from harness.lib.training import loss as loss_module
    from harness.lib.training.local import LocalEngine
    from harness.lib.training.loop import TrainLoop

    engine = LocalEngine(
        torch, model, learning_rate=1e-5 if args.full else 2e-4, weight_decay=0.0, warmup_steps=0,
        total_steps=1000, max_grad_norm=1.0, bf16=bf16, save_weights=lambda *_: None,
    )
    engine.forward = marked("forward", engine.forward)
    if hasattr(engine, "loss"):  # the decoder and the loss; the head's loss is marked inside
        engine.loss = marked("forward", engine.loss)
    engine.backward = marked("backward", engine.backward)
    engine.step = marked("optimizer", engine.step)
    patches = contextlib.ExitStack()
    patches.enter_context(_patch(loop_module, "collate", marked("data", batching.collate)))
    from harness.lib.training import local as local_module

    for owner in (loop_module, local_module):
        if hasattr(owner, "token_loss"):
            patches.enter_context(_patch(owner, "token_loss", marked("loss", batching.token_loss)))
    fused = loss_module.LinearCrossEntropy
    patches.enter_context(_patch(fused, "apply", marked("loss", fused.apply)))
    with tempfile.TemporaryDirectory() as out, patches:
        train = TrainLoop(
            engine, _cfg(args), examples, seed=args.seed, output_dir=Path(out), pad_id=tokenizer.pad_token_id,
            config_digest="x", emit=lambda *_: None, resume=False,
        )
        rows = [[i] for i in range(len(examples))]
        return profile(lambda: train._train_step(rows, 0), args.warmup, args.steps)


def hf(args: argparse.Namespace, model: Any, tokenizer: Any, examples: Sequence[Any], bf16: bool) -> Any:
    import torch
    import transformers
    from transformers import loss as loss_package

    mapping = loss_package.loss_utils.LOSS_MAPPING
    with tempfile.TemporaryDirectory() as out:
        training_args = transformers.TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, learning_rate=1e-5 if args.full else 2e-4,
            bf16=bf16, use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no", max_grad_norm=1.0,
            logging_steps=1, disable_tqdm=True, label_names=["labels"], max_steps=1000,
        )
        collator = transformers.DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
        features = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e), "labels": e.labels} for e in examples]
        trainer = transformers.Trainer(model=model, args=training_args, data_collator=collator, processing_class=tokenizer)
        trainer.create_optimizer_and_scheduler(num_training_steps=1000)
        model_p, optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
        trainer.model_wrapped = model_p
        items = sum(sum(label != -100 for label in e.labels[1:]) for e in examples)

        def step() -> None:
            with torch.profiler.record_function("data"):
                batch = trainer._prepare_inputs(collator(features))
            model_p.train()
            with torch.profiler.record_function("forward"), trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(model_p, batch, num_items_in_batch=torch.tensor(items))
            with torch.profiler.record_function("backward"):
                trainer.accelerator.backward(loss)
            with torch.profiler.record_function("optimizer"):
                trainer.accelerator.clip_grad_norm_(model_p.parameters(), 1.0)
                optimizer.step()
                trainer.lr_scheduler.step()
                model_p.zero_grad()

        original = mapping["ForCausalLM"]
        mapping["ForCausalLM"] = marked("loss", original)
        try:
            return profile(step, args.warmup, args.steps)
        finally:
            mapping["ForCausalLM"] = original


@contextlib.contextmanager
def _patch(owner: Any, name: str, value: Any):
    from unittest import mock

    with mock.patch.object(owner, name, value):
        yield


def _cfg(args: argparse.Namespace) -> Any:
    from harness.lib.training.config import TrainingConfig

    return TrainingConfig(batch_size=args.batch_size, max_length=args.max_length, save_every=10_000)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import peft
    import torch
    import transformers

    from harness.lib.models import EMBEDDED, materialize_embedded

    folder = materialize_embedded(EMBEDDED["smollm2-135m-instruct"])
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    torch.manual_seed(args.seed)
    if not args.full:
        config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, config)
    model.train()
    return model, tokenizer


def main() -> None:
    args = parse_args()
    import torch

    from harness.lib.data import data_dir, seeded_sample
    from harness.lib.device import native_bf16
    from harness.lib.training.examples import encode_conversations
    from harness.plugin.components import RunContext
    from harness_plugins.readers.formats import CsvReader

    bf16 = native_bf16()
    ctx = RunContext(Path.cwd(), Path.cwd(), args.seed)
    reader = CsvReader(CsvReader.Config(user="{instruction}", assistant="{response}"), ctx)
    path = data_dir() / "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
    records = seeded_sample(list(reader.read(path, "bitext")), 64, args.seed, key=lambda r: r.source_id)
    _, tokenizer = _load(args)
    examples, _ = encode_conversations(tokenizer, records, args.max_length)
    examples = examples[: args.batch_size]
    lengths = [len(e) for e in examples]
    supervised = sum(sum(label != -100 for label in e.labels[1:]) for e in examples)
    print(
        f"{'full' if args.full else 'LoRA'} step, batch {len(examples)} x {max(lengths)} positions "
        f"({sum(lengths)} real tokens, {supervised} supervised), bf16 autocast {bf16}, "
        f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    sides = [("ours (pad)", ours)] + ([] if args.ours_only else [("HF Trainer", hf)])
    if args.hf_first:
        sides.reverse()
    for title, fn in sides:
        model, tokenizer = _load(args)
        prof = fn(args, model, tokenizer, examples, bf16)
        summarize(title, prof, args.steps, args.top)
        del model, prof


if __name__ == "__main__":
    main()
