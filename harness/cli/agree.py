"""``harness agree SUITE --backends hf,vllm_server``: the suite's benchmarks through two backends,
per-item prediction agreement and the largest log-prob difference (see ``harness.run.agree``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.errors import ConfigError

NAME = "agree"
HELP = "run the same items through two backends and report how far they agree"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)
    parser.add_argument("--backends", required=True, help="two backend names, comma-separated (e.g. hf,vllm_server)")
    parser.add_argument("--benchmarks", help="labels under the suite's 'evaluate' (default: all)")
    parser.add_argument("--limit", type=int, help="first N items of each benchmark")
    parser.add_argument(
        "--backend-config", action="append", default=[], metavar="NAME=JSON",
        help='options of one backend, e.g. openai={"url": "http://127.0.0.1:8000/v1", "served_model": "m"}',
    )  # fmt: skip
    parser.add_argument("--min-agreement", type=float, help="exit 1 when a benchmark's agreement fraction is below this")


def _configs(raw: list[str]) -> dict[str, dict[str, Any]]:
    configs: dict[str, dict[str, Any]] = {}
    for entry in raw:
        name, sep, text = entry.partition("=")
        try:
            value = json.loads(text) if sep else None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--backend-config {name}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--backend-config {entry!r}: expected NAME={{...}}")
        configs[name] = value
    return configs


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import load
    from harness.run.agree import run_agreement

    loaded, _pm, registries = load(args.suite)
    configs = _configs(args.backend_config)
    backends = [(name.strip(), configs.get(name.strip(), {})) for name in args.backends.split(",") if name.strip()]
    benchmarks = [b.strip() for b in args.benchmarks.split(",")] if args.benchmarks else None
    store = loaded.dir / (loaded.suite.store or ".harness")
    results = run_agreement(loaded, registries, store / "work", backends, benchmarks, args.limit)
    failed = False
    for result in results:
        console.print(result.line(), markup=False)
        if result.disagreements:
            console.print(f"  disagree on: {', '.join(result.disagreements[:10])}", markup=False)
        if args.min_agreement is not None and result.agree < args.min_agreement * result.items:
            failed = True
    return 1 if failed else 0
