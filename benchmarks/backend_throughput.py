"""Throughput and agreement of the ``hf`` and ``vllm_server`` backends on this machine.

The same items through both backends, one run, side by side: MMLU and HellaSwag (log-likelihood:
per-item predicted choice and the largest log-prob difference), support-intent (greedy
generation, chat template) and HumanEval (greedy code generation, judged in the sandbox).
Items per second exclude model loading and server start-up; the machine (CPU model, cores, load
average before and after) is printed with the figures, since a shared machine's load moves them.
Nothing is asserted.

    python benchmarks/backend_throughput.py [--items 50] [--humaneval 10] [--backends hf,vllm_server]

Needs the data folder (``$HARNESS_DATA_DIR``) and the vLLM server venv (``$HARNESS_VLLM_VENV``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import yaml


def machine() -> str:
    """CPU model, core count and the 1-minute load average."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"


def suite(items: int, humaneval: int) -> dict:
    return {
        "name": "backend-throughput",
        "model": {"source": "smollm2-135m-instruct", "dtype": "float32"},
        "evaluate": {
            "mmlu": {"name": "mmlu", "per_subject": max(1, -(-items // 57))},
            "hellaswag": {"name": "hellaswag", "sample": items},
            "support_intent": {"name": "support_intent", "sample": items},
            "humaneval": {"name": "humaneval", "problems": humaneval, "max_new_tokens": 128},
        },
        "report": ["json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50, help="items of MMLU, HellaSwag and support-intent")
    parser.add_argument("--humaneval", type=int, default=10, help="HumanEval problems")
    parser.add_argument("--backends", default="hf,vllm_server")
    args = parser.parse_args()

    from harness.cli.common import registries
    from harness.run.agree import run_agreement
    from harness.suite.config import load_suite

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="backend-throughput-") as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(yaml.safe_dump(suite(args.items, args.humaneval)))
        backends = [(name.strip(), {}) for name in args.backends.split(",")]
        results = run_agreement(load_suite(path), registries(), Path(tmp) / "work", backends, limit=args.items)
    names = [name for name, _ in backends]
    print(f"{'benchmark':<16}" + "".join(f"{n + ' items/s':>22}" for n in names) + f"{'agree':>10}{'max |dlogp|':>14}")
    for r in results:
        rates = "".join(f"{r.items_per_s[n]:>22.2f}" for n in names)
        diff = "-" if r.max_logprob_diff is None else f"{r.max_logprob_diff:.4f}"
        print(f"{r.benchmark:<16}{rates}{f'{r.agree}/{r.items}':>10}{diff:>14}")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
