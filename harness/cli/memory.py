"""``harness plan``: a fine-tune's memory per GPU (weights, gradients, optimizer states,
activations) and whether it fits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from harness.tools import memory as pl

NAME = "plan"
HELP = "estimate a fine-tune's memory per GPU (weights, grads, optimizer, activations) and whether it fits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"a preset ({', '.join(pl.PRESETS)}), {pl.EMBEDDED_NAME}, a model folder or config.json")
    parser.add_argument("--params", type=float, help="override the parameter count, e.g. 7e9 (alone: model state only)")
    parser.add_argument("--method", choices=pl.METHODS, default="full")
    parser.add_argument("--precision", choices=pl.PRECISIONS, default="bf16", help="mixed: bf16 compute, fp32 master weights")
    parser.add_argument("--optimizer", choices=pl.OPTIMIZERS, default="adamw")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--attention", choices=pl.ATTENTIONS, default="sdpa", help="eager keeps the s^2 attention scores")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--sharding", choices=pl.SHARDINGS, help="default: zero3 (full sharding) when --gpus > 1")
    parser.add_argument("--gpu-memory", type=float, default=80.0, metavar="GIB", help="memory of one GPU (default 80)")
    parser.add_argument(
        "--reserve-gib",
        type=float,
        help="kept back for the CUDA context and allocator fragmentation (default 10%% of --gpu-memory)",
    )
    parser.add_argument("--lora-r", type=int, default=pl.DEFAULT_LORA_R)
    parser.add_argument("--lora-targets", default=",".join(pl.DEFAULT_LORA_TARGETS), help="Linear module names")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def run(args: argparse.Namespace, console: Console) -> int:
    """The memory a training setting needs per GPU and whether it fits (``harness/tools/memory/``);
    exit 0 either way (``fits`` in ``--json``)."""
    from harness.tools.memory import PlanOptions, plan

    options = PlanOptions(
        method=args.method,
        precision=args.precision,
        optimizer=args.optimizer,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        gradient_checkpointing=args.gradient_checkpointing,
        attention=args.attention,
        gpus=args.gpus,
        sharding=args.sharding,
        gpu_memory_gib=args.gpu_memory,
        reserve_gib=args.reserve_gib,
        params=None if args.params is None else round(args.params),
        lora_r=args.lora_r,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
    )
    result = plan(args.model, options, Path.cwd())
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        result.render(console)
    return 0

