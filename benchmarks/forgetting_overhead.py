"""What watching forgetting costs: the forgetting suite's training alone against the same
training with the live probes (``forgetting.live``), in one run, on this machine.

Both runs train the same LoRA on the same curated data with the same checkpoints (``eval_every``),
each in a fresh store, so neither reuses the other's cache.  The *alone* run has no ``forgetting``
section; the *live* run scores every probe on the base model (step 0) and on each checkpoint while
the trainer waits between steps.  The figure is the ratio of the two ``train`` stages' wall time.
The live run's probe time is broken down into model loads (the base model once, each checkpoint
once: tokenizer, weights, adapter merged) and scoring proper, which says where the overhead is.

    python benchmarks/forgetting_overhead.py                                  # the whole suite
    python benchmarks/forgetting_overhead.py --max-steps 12 --eval-every 6 \\
        --probes domain,mmlu,hellaswag,wikitext2                              # a quicker cut

The probes are the suite's, unchanged (a smaller cut changes the ratio, so the configuration is
printed with it).  Wall time on a shared machine moves with its load: the load average is
printed before and after, and the two runs alternate with ``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("TQDM_DISABLE", "1")

from harness.lib.console import RunConsole
from harness.plugin.manager import get_plugin_manager
from harness.plugin.registry import Registries
from harness.run.runner import Runner, RunOptions
from harness.stages import forgetting_live
from harness.suite.config import load_suite
from harness_plugins.backends.hf import HFBackend

SUITE = Path(__file__).resolve().parent.parent / "suites" / "forgetting.yaml"


def machine() -> str:
    """One line: the CPU (or GPU), its cores, and the load average now."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def variant(suite: dict[str, Any], args: argparse.Namespace, live: bool) -> dict[str, Any]:
    """The suite cut to its training (and, when ``live``, its live probes): no evaluation, gates
    or reports beyond the JSON, and no early stop (both runs train the same steps)."""
    out = {k: v for k, v in suite.items() if k not in ("evaluate", "gates", "forgetting", "report")}
    out["report"] = ["json"]
    train = dict(out["train"])
    if args.max_steps:
        train["max_steps"] = args.max_steps
    if args.eval_every:
        train["eval_every"] = args.eval_every
    out["train"] = train
    if live:
        forgetting = {k: v for k, v in suite["forgetting"].items() if k != "stop"}
        if args.probes:
            keep = set(args.probes.split(",")) | {forgetting["domain"]}
            forgetting["probes"] = {k: v for k, v in forgetting["probes"].items() if k in keep}
            forgetting["bounds"] = {k: v for k, v in forgetting.get("bounds", {}).items() if k in keep}
        forgetting["live"] = True
        out["forgetting"] = forgetting
    return out


class Timer:
    """Seconds spent inside wrapped callables, by name; ``within`` counts a callable only while
    another wrapped one is running (model loads made by the live probes, not by the trainer)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.running: set[str] = set()

    def wrap(self, name: str, fn: Callable[..., Any], within: str | None = None) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            if within is not None and within not in self.running:
                return fn(*a, **kw)
            started = time.perf_counter()
            self.running.add(name)
            try:
                return fn(*a, **kw)
            finally:
                self.running.discard(name)
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed


def run_once(suite: dict[str, Any], folder: Path) -> float:
    """Run ``suite`` in a fresh store under ``folder``; the train stage's wall seconds."""
    folder.mkdir(parents=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    pm = get_plugin_manager(load_entrypoints=False)
    runner = Runner(load_suite(path), pm, Registries.from_plugin_manager(pm), RunConsole(),
                    RunOptions(reports_root=folder / "reports", store_dir=folder / "store"))
    result = runner.run()
    if result.train is None:
        raise SystemExit(f"training failed: {result.train_error}")
    return next(s.duration_s for s in result.stages if s.stage == "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, default=SUITE)
    parser.add_argument("--max-steps", type=int, help="train this many steps (default: the suite's)")
    parser.add_argument("--eval-every", type=int, help="checkpoint every N steps (default: the suite's)")
    parser.add_argument("--probes", help="comma-separated probe labels to keep (default: all; the domain one always)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two runs this many times")
    args = parser.parse_args()
    suite = yaml.safe_load(args.suite.read_text())
    print(f"machine: {machine()}")
    timer = Timer()
    HFBackend.load = timer.wrap("model loads", HFBackend.load, within="live probes")  # type: ignore[method-assign]
    forgetting_live.LiveForgetting.__call__ = timer.wrap("live probes", forgetting_live.LiveForgetting.__call__)  # type: ignore[method-assign]
    alone, live = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            alone.append(run_once(variant(suite, args, live=False), Path(tmp) / f"alone-{round_}"))
            live.append(run_once(variant(suite, args, live=True), Path(tmp) / f"live-{round_}"))
    cut = variant(suite, args, live=True)
    print(f"suite {args.suite.name}: {cut['train'].get('max_steps', 'all')} steps, checkpoint every "
          f"{cut['train'].get('eval_every')}, probes {', '.join(cut['forgetting']['probes'])}")
    best_alone, best_live = min(alone), min(live)
    probes = timer.seconds.get("live probes", 0.0) / args.repeat
    loads = timer.seconds.get("model loads", 0.0) / args.repeat
    print(f"training alone:      {best_alone:7.1f} s  (runs: {', '.join(f'{t:.1f}' for t in alone)})")
    print(f"with live probes:    {best_live:7.1f} s  (runs: {', '.join(f'{t:.1f}' for t in live)})")
    print(f"  of which probes:   {probes:7.1f} s per run, model loads {loads:.1f} s of it")
    print(f"ratio live / alone:  {best_live / best_alone:7.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
