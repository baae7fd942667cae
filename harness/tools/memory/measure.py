"""Measuring the peak on CPU: a few real training steps in a subprocess, and the peak RSS they
add, which the estimate (fp32, AdamW, no reserve) should match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from harness.errors import CheckError



@dataclass(frozen=True)
class MeasuredPeak:
    """Peak memory a few CPU training steps added to a clean process."""

    peak_bytes: int
    """Peak RSS (ru_maxrss) minus the RSS right before the model was created or loaded."""
    params: int
    rss_before: int
    seconds: float


def measure_training_peak(
    model: Path | Mapping[str, Any],
    *,
    seq_len: int,
    micro_batch: int,
    steps: int = 2,
    attention: str = "sdpa",
    seed: int = 0,
    timeout: float = 600,
) -> MeasuredPeak:
    """Train ``steps`` full fine-tuning steps (fp32, AdamW, random tokens as inputs and labels)
    in a fresh subprocess, and return the peak RSS that the model, its training and the optimizer
    added: the peak (``VmHWM``, reset just before the model is built; ``ru_maxrss`` where it cannot
    be reset) minus the RSS at that moment.

    ``model`` is a model folder (loaded with ``from_pretrained(dtype=float32)``) or a config
    mapping (a randomly initialised model).  The baseline is taken after torch, transformers
    and the model's module are imported (importing the model code alone adds ~140 MB of RSS,
    the Python runtime rather than training)."""
    spec = {
        "model": str(model) if isinstance(model, Path) else dict(model),
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "steps": steps,
        "attention": attention,
        "seed": seed,
    }
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    code = "from harness.tools.memory.measure import _measure_main; _measure_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], check=False, input=json.dumps(spec), capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckError(f"measure_training_peak: no result within {timeout:g} s") from exc
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CheckError(f"measure_training_peak: the training subprocess failed ({proc.returncode}): {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return MeasuredPeak(**result)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs`` 5), so
    the peak read later is the training's, not a transient of the imports before it (compiling a
    fresh venv's bytecode, for one).  False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _measure_main() -> None:  # pragma: no cover - runs in the subprocess of measure_training_peak
    """The subprocess side of ``measure_training_peak``: a JSON spec on stdin, a JSON line out."""
    import gc
    import resource
    import time

    import torch
    import transformers

    spec = json.loads(sys.stdin.read())
    source, attention = spec["model"], spec["attention"]
    torch.manual_seed(spec["seed"])
    if isinstance(source, dict):
        kwargs = dict(source)
        config = transformers.AutoConfig.for_model(kwargs.pop("model_type", "llama"), **kwargs)
    else:
        config = transformers.AutoConfig.from_pretrained(source)
    cls: Any = transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # imports the model's module
    ids = torch.randint(0, config.vocab_size, (spec["micro_batch"], spec["seq_len"]))
    gc.collect()
    reset = _reset_peak_rss()
    before = _rss_bytes()
    started = time.perf_counter()
    if isinstance(source, dict):
        model = cls._from_config(config, attn_implementation=attention, dtype=torch.float32)
    else:
        model = cls.from_pretrained(source, dtype=torch.float32, attn_implementation=attention)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for _ in range(spec["steps"]):
        out = model(input_ids=ids, labels=ids)  # held through backward, as the estimate assumes
        out.loss.backward()
        del out
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    hwm = _peak_rss_bytes() if reset else None
    peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result = {
        "peak_bytes": peak - before,
        "params": sum(p.numel() for p in model.parameters()),
        "rss_before": before,
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(result))
