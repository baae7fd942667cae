"""Prompt variants on real data: zero-shot, seeded shots and nearest examples of the embedded
SmolLM2-135M-Instruct on held-out Bitext support intents, side by side.

The example pool is the curated training data of ``suites/prompting_vs_lora.yaml`` (400 sampled
training-split records, deduplicated); the items are support_intent's held-out split.  For each
arm: accuracy, the prompt cost (examples' tokens, mean input tokens per request, share of the
context), items per second (model loading and pool embedding excluded), then every pair with its
paired interval.  No arm is trained here (that is the suite's job), so the prompting rule reads
"not applicable".  The machine and its load are printed with the figures.  Nothing is asserted.

    python benchmarks/prompt_variants.py [--items 30] [--k 8]

Needs the data folder (``$HARNESS_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

PROMPT = "Classify the intent of this customer message. Answer with the intent label only.\n\nMessage: {instruction}"
BITEXT = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


def suite(items: int) -> dict:
    """The data, curation and benchmark of ``suites/prompting_vs_lora.yaml`` (its train block
    only makes the plan curate; nothing is trained)."""
    return {
        "name": "prompt-variants",
        "seed": 1234,
        "model": {"source": "smollm2-135m-instruct", "dtype": "float32"},
        "data": [{"path": BITEXT, "format": "csv", "split": "train", "holdout_fraction": 0.1, "sample": 400,
                  "user": PROMPT, "assistant": "{intent}"}],
        "curate": {"filters": ["exact_dedup", {"name": "min_response_length", "min_chars": 3}]},
        "train": {"name": "lora"},
        "evaluate": {"support_intent": {"name": "support_intent", "prompt": PROMPT, "sample": items}},
        "report": ["json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=30, help="held-out support-intent items")
    parser.add_argument("--k", type=int, default=8, help="examples per prompt")
    args = parser.parse_args()

    from harness.cli.common import registries
    from harness.lib.model_api import model_api
    from harness.lib.models import resolve_model
    from harness.lib.prompting import PromptSpec, prompt_cost, prompted
    from harness.run.plan import plan_run
    from harness.stages.curate import curate
    from harness.stages.pairs import compare_arms, render_markdown
    from harness.suite.config import load_suite
    from harness.types import BenchmarkResult

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="prompt-variants-") as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(yaml.safe_dump(suite(args.items)))
        loaded = load_suite(path)
        plan = plan_run(loaded, registries(), Path(tmp) / "work")
        assert plan.curate is not None
        pool = curate(plan.curate).records
        bench = plan.benchmarks["support_intent"]
        items = bench.items()
        spec = loaded.suite.model
        model = plan.backend.load(resolve_model(spec.source, spec.backend, spec.dtype, loaded.dir))
        api = model_api(model)
        arms = {"zero_shot": None, f"shots_{args.k}": PromptSpec(shots=args.k), f"nearest_{args.k}": PromptSpec(nearest=args.k)}
        messages = [[{"role": "user", "content": item["prompt"]}] for item in items]
        results: dict[str, BenchmarkResult] = {}
        print(f"{len(pool)} pool records, {len(items)} held-out items, load {load:.2f} on {os.cpu_count()} cores")
        print(f"{'arm':<12}{'accuracy':>10}{'example tok':>13}{'input tok':>11}{'context':>9}{'items/s':>9}")
        for name, variant in arms.items():
            arm_api = api if variant is None else prompted(api, variant, pool, loaded.suite.seed)
            cost = prompt_cost(api, variant or PromptSpec(), pool, loaded.suite.seed, messages)
            if variant is not None and variant.nearest:
                arm_api.examples_for(messages[0])  # embed the pool before the clock starts
            arm_model = replace(model, api=arm_api)
            start = time.perf_counter()
            scored = bench.evaluate(arm_model, items, lambda *a: None)
            rate = len(items) / (time.perf_counter() - start)
            results[name] = BenchmarkResult(bench.name, name, bench.metric, tuple(scored), name)
            print(f"{name:<12}{results[name].score:>10.3f}{cost.example_tokens:>13.0f}{cost.mean_input_tokens:>11.0f}"
                  f"{cost.context_share:>9.1%}{rate:>9.2f}")
        kinds = {name: ("model" if v is None else "prompting") for name, v in arms.items()}
        print(render_markdown(compare_arms({"support_intent": results}, kinds, alpha=0.05, seed=0)))
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
