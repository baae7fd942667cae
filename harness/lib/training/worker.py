"""Entry point of every process of a distributed training job (``torchrun`` or ``deepspeed``).

``python -m harness.lib.training.worker SPEC.json``: the spec (written by ``harness.lib.training.launch``)
names the engine, the model folder, the encoded examples, the training config and the output
folder.  Rank 0 appends the loop's events as JSON lines to ``events.jsonl`` (the parent process
follows that file); every rank writes ``sharding_rank<N>.json`` (what it holds), and rank 0 writes
``result.json`` at the end.  Any failure exits non-zero with the traceback on stderr.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import CheckError
from harness.lib.training.config import TrainingConfig
from harness.lib.training.examples import load_examples
from harness.lib.training.events import LoopEvent, to_json
from harness.lib.training.loop import LoopSetup, TrainLoop, total_steps


def _events(path: Path, rank: int) -> Callable[[LoopEvent], None]:
    """Rank 0's events appended to ``path`` as JSON lines; the other ranks' dropped."""

    def emit(event: LoopEvent) -> None:
        if rank != 0:
            return
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(to_json(event)) + "\n")
            fh.flush()

    return emit


def _build_engine(name: str, torch: Any, spec: dict[str, Any], cfg: TrainingConfig, total: int) -> Any:
    bf16 = spec["bf16"]
    if name == "fsdp2":
        from harness.lib.training.fsdp import FSDPEngine

        return FSDPEngine(torch, Path(spec["model_path"]), cfg=cfg, total_steps=total, bf16=bf16)
    if name == "deepspeed":
        from harness.lib.training.zero import ZeroEngine

        return ZeroEngine(torch, Path(spec["model_path"]), cfg=cfg, total_steps=total, bf16=bf16, options=spec.get("deepspeed", {}))
    raise CheckError(f"unknown training engine {name!r}")


def _init_distributed(torch: Any, engine: str, expected: int) -> None:
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if engine == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend)
    else:
        dist.init_process_group(backend)
    if dist.get_world_size() != expected:
        raise CheckError(f"the job has {dist.get_world_size()} processes, the launch asked for {expected}")


def main(argv: list[str]) -> int:
    from harness.lib.training.launch import die_with_parent

    parent = os.getppid()
    die_with_parent()  # the launcher dies (killed with the harness): so does this rank
    if os.getppid() != parent:
        return 1  # it died before the request took effect
    import torch

    spec_path = Path(next(a for a in argv if not a.startswith("--local_rank")))
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    _init_distributed(torch, spec["engine"], spec["world_size"])
    import torch.distributed as dist

    rank = dist.get_rank()
    out = Path(spec["output_dir"])
    random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    cfg = TrainingConfig.model_validate(spec["config"])
    examples = load_examples(Path(spec["examples"]))
    total = total_steps(examples, cfg, spec["seed"])
    engine = _build_engine(spec["engine"], torch, spec, cfg, total)
    (out / f"sharding_rank{rank}.json").write_text(json.dumps({"rank": rank, **engine.sharding()}))
    emit = _events(out / "events.jsonl", rank)
    ewc = None
    if cfg.ewc is not None:
        from harness.lib.training.run import make_ewc_for

        fisher = load_examples(Path(spec["fisher"]))
        ewc = make_ewc_for(torch, engine, cfg, fisher, spec["pad_id"])
    setup = LoopSetup(
        seed=spec["seed"], output_dir=out, pad_id=spec["pad_id"], config_digest=spec["config_digest"],
        resume=spec["resume"], final_name="model",
    )
    loop = TrainLoop(engine, cfg, examples, setup, emit=emit, ewc=ewc)
    result = loop.run()
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result.to_json()))
    engine.barrier()
    dist.destroy_process_group()  # without it the DeepSpeed launcher's ranks abort at exit
    return 0


if __name__ == "__main__":  # pragma: no cover - run under torchrun / deepspeed
    sys.exit(main(sys.argv[1:]))
