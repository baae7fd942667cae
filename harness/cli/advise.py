"""``harness advise SUITE``: prompting, LoRA or full fine-tuning, decided by the chapter's rules on
measured arms, with the serving cost per month and the break-even time of training.

With ``--run`` it reads a stored run of the suite (nothing is scored again); without, it runs the
suite's arms first (zero-shot, few-shot, trained).  Traffic and prices come from the flags, else
the suite's ``deployment:`` block.  Writes ``advice.json``.  See docs/advise.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

NAME = "advise"
HELP = "recommend prompting, LoRA or full fine-tuning from measured arms, with costs and break-even"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)
    parser.add_argument("--run", help="advise on this stored run (id, unique prefix or suffix, or 'latest') instead of running the arms")
    parser.add_argument("--store", type=Path, help="store folder (default: the suite's)")
    parser.add_argument("--benchmark", help="the benchmark to decide on (default: the first scored on two or more arms)")
    parser.add_argument("--requests-per-month", type=float, help="traffic the deployment serves")
    parser.add_argument("--price-per-1k-input-tokens", type=float, help="serving price of 1,000 input tokens")
    parser.add_argument("--price-per-1k-output-tokens", type=float, help="serving price of 1,000 output tokens")
    parser.add_argument("--gpu-hour-price", type=float, help="price of one GPU-hour of training")
    parser.add_argument(
        "--prompt-costs", type=Path,
        help="YAML file of prompt costs per arm (ARM: {example_tokens, mean_input_tokens, context_share, output_tokens}), "
        "for runs that did not record them",
    )
    parser.add_argument("--rules", type=Path, help="YAML file overriding rule thresholds: rules: {ID: {THRESHOLD: VALUE}}")
    parser.add_argument("--shots", default="5,20", help="few-shot arms to run, comma-separated k (without --run)")
    parser.add_argument("--full", action="store_true", help="also run a full fine-tuning arm (without --run)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="report root folder (advice.json goes in RUN_ID/)")
    parser.add_argument("--out", type=Path, help="where to write advice.json (default: REPORTS/RUN_ID/advice.json)")


def _deployment(args: argparse.Namespace, spec: Any) -> tuple[Any, Any]:
    from harness.tools.advise import Prices, Traffic

    def pick(flag: str) -> float | None:
        value = getattr(args, flag)
        return value if value is not None else (getattr(spec, flag) if spec is not None else None)

    traffic = Traffic(pick("requests_per_month"))
    prices = Prices(pick("price_per_1k_input_tokens"), pick("price_per_1k_output_tokens"), pick("gpu_hour_price"))
    return traffic, prices


def _stored(args: argparse.Namespace, store_dir: Path) -> dict[str, Any]:
    from harness.errors import ConfigError
    from harness.lib.resultdoc import load_document
    from harness.lib.store import Store

    if not (store_dir / "store.sqlite").is_file():
        raise ConfigError(f"{store_dir}: no harness store here; name one with --store DIR")
    store = Store(store_dir)
    try:
        return load_document(store, args.run)
    finally:
        store.close()


def _run_arms(args: argparse.Namespace, console: Console, loaded: Any, store_dir: Path) -> Any:
    """Run the suite with the advise arms (needs suite arms; see harness.tools.advise.arms)."""
    from harness.cli.common import load_plugins
    from harness.errors import ConfigError
    from harness.lib.console import RunConsole
    from harness.run.runner import Runner, RunOptions
    from harness.tools.advise.arms import arms_suite

    try:
        shots = [int(k) for k in args.shots.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--shots {args.shots!r}: expected comma-separated integers") from None
    suite = arms_suite(loaded, shots, args.full)
    pm, registries = load_plugins()
    options = RunOptions(reports_root=args.reports, store_dir=store_dir)
    runner = Runner(suite, pm, registries, RunConsole(console), options)
    try:
        return runner.run()
    finally:
        runner.store.close()


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.suite.config import load_suite
    from harness.tools.advise import advise, load_rules, measure_arms, write_advice
    from harness.tools.advise.measure import read_prompt_costs
    from harness.tools.advise.render import render

    loaded = load_suite(args.suite)
    suite = loaded.suite
    store_dir = args.store or loaded.dir / (suite.store or ".harness")
    rules = load_rules(suite.advise.rules if suite.advise else None, loaded.where(("advise", "rules")), args.rules)
    costs = read_prompt_costs(args.prompt_costs) if args.prompt_costs else None
    result = _stored(args, store_dir) if args.run else _run_arms(args, console, loaded, store_dir)
    measured = measure_arms(result, args.benchmark, costs, alpha=suite.gating.alpha, seed=suite.seed)
    traffic, prices = _deployment(args, suite.deployment)
    advice = advise(measured, traffic, prices, rules)
    run_id = result["run_id"] if isinstance(result, dict) else result.run_id
    render(advice, console)
    out = write_advice(advice, args.out or args.reports / run_id / "advice.json")
    console.print(f"wrote {out}")
    return 0
