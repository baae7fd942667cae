"""Throughput and agreement of the native multiple-choice scorer against lm-eval's HF backend.

On the embedded SmolLM2 (one dtype for every engine) and the same seeded MMLU and HellaSwag items,
three ways of getting the log-likelihood of every choice are timed side by side:

* ``native``: ``engine: native`` (``harness.lib.hf.scoring.choice_logprobs``);
* ``lm_eval``: ``engine: lm_eval``, exactly as the benchmark runs it: one ``simple_evaluate`` per
  chunk of ``chunk_size`` items on an in-memory ``HFLM`` (task set-up included);
* ``HFLM``: lm-eval's scorer alone, ``HFLM.loglikelihood`` on the same (context, continuation)
  pairs, built once outside the clock: the fair "scorer against scorer" comparison.

Chunks are timed in turn across the engines (rotating who goes first), so a machine shared with
other work slows all of them alike.  Agreement compares the predictions (MMLU: the letter;
HellaSwag: acc and acc_norm picks) and the log-likelihoods of native against lm-eval.

    python benchmarks/eval_throughput.py [--items 100] [--dtype auto] [--seed 0] [--no-engine-path]

``--dtype auto`` is what the ``hf`` backend picks (bfloat16 on a CPU with native bf16).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's progress bars, read when tqdm is imported

from harness.plugin.components import Benchmark, ComponentConfig, Item, RunContext
from harness.lib.models import EMBEDDED, LoadedModel, ModelRef, materialize_embedded
from harness.lib.device import resolve_dtype
from harness_plugins.backends.hf import HFBackend
from harness.lib.hf.scoring import Request
from harness_plugins.benchmarks.hellaswag import HellaSwag, HellaSwagConfig, predictions
from harness_plugins.benchmarks.mmlu import LETTERS, MMLU, MMLUConfig, prompt

Scorer = Callable[[Sequence[Item]], list[list[float]]]
ENGINES = ("native", "lm_eval")


@dataclass
class Timing:
    """Seconds and log-likelihoods of one engine over all chunks."""

    seconds: float = 0.0
    logliks: list[list[float]] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100, help="items per benchmark")
    parser.add_argument("--dtype", default="auto", help="auto (the hf backend's choice), bfloat16, float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a model folder instead of the embedded SmolLM2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--no-engine-path", action="store_true", help="skip lm-eval's simple_evaluate path (slow set-up)"
    )
    return parser.parse_args()


def load_model(folder: str | None, dtype: str, ctx: RunContext) -> LoadedModel:
    path = Path(folder) if folder else materialize_embedded(EMBEDDED["smollm2-135m-instruct"])
    backend = HFBackend(ComponentConfig(), ctx)
    return backend.load(ModelRef("baseline", path, "hf", dtype, None, "throughput"))


def mmlu_items(ctx: RunContext, n: int, seed: int) -> list[Item]:
    """A seeded sample of ``n`` of the subject-stratified items, in the benchmark's order."""
    docs = MMLU(MMLUConfig(per_subject=max(2, -(-n // 57)), seed=seed), ctx).items()
    ranked = sorted(docs, key=lambda d: hashlib.sha256(f"{seed}:{d['id']}".encode()).hexdigest())
    keep = {d["id"] for d in ranked[:n]}
    return [d for d in docs if d["id"] in keep]


def hflm_scorer(
    model: LoadedModel, requests_of: Callable[[Sequence[Item]], list[Request]], batch_size: int
) -> Scorer:
    """lm-eval's ``HFLM.loglikelihood`` alone, on the same pairs the native engine scores."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model.model, tokenizer=model.tokenizer, batch_size=batch_size, device="cpu")

    def score(items: Sequence[Item]) -> list[list[float]]:
        requests = requests_of(items)
        pairs = [(context, cont) for context, conts in requests for cont in conts]
        instances = [
            Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
            for i, pair in enumerate(pairs)
        ]
        flat = iter(loglik for loglik, _ in lm.loglikelihood(instances, disable_tqdm=True))
        return [[next(flat) for _ in conts] for _, conts in requests]

    return score


def run(scorers: dict[str, Scorer], items: Sequence[Item], chunk: int) -> dict[str, Timing]:
    """Time every scorer chunk by chunk, taking turns, after an untimed warm-up of the fast ones."""
    timings = {name: Timing() for name in scorers}
    for name, scorer in scorers.items():
        if name != "lm_eval":  # its warm-up would cost a whole task set-up
            scorer(items[:2])
    names = list(scorers)
    for k, start in enumerate(range(0, len(items), chunk)):
        part = items[start : start + chunk]
        for name in names[k % len(names) :] + names[: k % len(names)]:
            began = time.perf_counter()
            logliks = scorers[name](part)
            timings[name].seconds += time.perf_counter() - began
            timings[name].logliks.extend(logliks)
    return timings


def compare(
    title: str,
    items: Sequence[Item],
    timings: dict[str, Timing],
    picks: Callable[[Item, list[float]], dict[str, int]],
) -> None:
    native = timings["native"]
    print(f"\n{title}: {len(items)} items")
    for name, timing in timings.items():
        rate = len(items) / timing.seconds
        ratio = "" if name == "native" else f"   native is {timing.seconds / native.seconds:.2f}x faster"
        print(f"  {name:8s} {timing.seconds:7.1f} s  {rate:6.2f} items/s{ratio}")
    for name, timing in timings.items():
        if name == "native":
            continue
        deltas = [
            abs(a - b) for ours, theirs in zip(native.logliks, timing.logliks) for a, b in zip(ours, theirs)
        ]
        ours_picks = [picks(item, row) for item, row in zip(items, native.logliks)]
        their_picks = [picks(item, row) for item, row in zip(items, timing.logliks)]
        for key in ours_picks[0]:
            same = sum(a[key] == b[key] for a, b in zip(ours_picks, their_picks))
            differ = [item["id"] for item, a, b in zip(items, ours_picks, their_picks) if a[key] != b[key]]
            acc_ours = sum(p[key] == gold(item) for p, item in zip(ours_picks, items)) / len(items)
            acc_theirs = sum(p[key] == gold(item) for p, item in zip(their_picks, items)) / len(items)
            print(
                f"  native vs {name:8s} {key:8s}: same prediction {same}/{len(items)}, "
                f"score {acc_ours:.3f} vs {acc_theirs:.3f}" + (f"; differ on {differ}" if differ else "")
            )
        print(f"  native vs {name:8s} max |delta log-prob| {max(deltas):.3g}")


def gold(item: Item) -> int:
    return int(item["answer"] if "answer" in item else item["label"])


def benchmark_scorers(
    bench: Benchmark, lmeval_bench: Benchmark, model: LoadedModel, requests_of: Any, args: argparse.Namespace
) -> dict[str, Scorer]:
    scorers: dict[str, Scorer] = {"native": lambda items: bench.loglikelihoods(model, items)}
    if not args.no_engine_path:
        scorers["lm_eval"] = lambda items: lmeval_bench.loglikelihoods(model, items)
    scorers["HFLM"] = hflm_scorer(model, requests_of, args.batch_size)
    return scorers


def mmlu_requests(docs: Sequence[Item]) -> list[Request]:
    return [(prompt(d), [f" {x}" for x in LETTERS]) for d in docs]


def hellaswag_requests(docs: Sequence[Item]) -> list[Request]:
    return [(d["query"], [f" {c}" for c in d["choices"]]) for d in docs]


def run_mmlu(model: LoadedModel, ctx: RunContext, args: argparse.Namespace) -> None:
    items = mmlu_items(ctx, args.items, args.seed)
    native, lmeval = (MMLU(MMLUConfig(engine=e, batch_size=args.batch_size), ctx) for e in ENGINES)
    timings = run(benchmark_scorers(native, lmeval, model, mmlu_requests, args), items, MMLU.chunk_size)
    compare("MMLU (letters)", items, timings, lambda item, row: {"acc": max(range(4), key=row.__getitem__)})


def run_hellaswag(model: LoadedModel, ctx: RunContext, args: argparse.Namespace) -> None:
    native, lmeval = (
        HellaSwag(
            HellaSwagConfig(sample=args.items, seed=args.seed, engine=e, batch_size=args.batch_size), ctx
        )
        for e in ENGINES
    )
    items = native.items()
    timings = run(
        benchmark_scorers(native, lmeval, model, hellaswag_requests, args), items, HellaSwag.chunk_size
    )
    compare("HellaSwag (endings)", items, timings, lambda item, row: predictions(row, item["choices"]))


def main() -> None:
    args = parse_args()
    import torch

    ctx = RunContext(Path.cwd(), Path.cwd())
    dtype = resolve_dtype(args.dtype)
    model = load_model(args.model, dtype, ctx)
    name = args.model or "SmolLM2-135M-Instruct"
    print(f"{name}, {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    run_mmlu(model, ctx, args)
    run_hellaswag(model, ctx, args)


if __name__ == "__main__":
    main()
