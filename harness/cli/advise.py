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
    parser.add_argument("--full", action="store_true", help="also train and evaluate a full fine-tuning arm (without --run)")
    parser.add_argument("--full-run", help="with --run: a stored full fine-tuning run of the suite whose candidate joins as arm 'full'")
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


def _stored(store_dir: Path, run: str) -> dict[str, Any]:
    from harness.errors import ConfigError
    from harness.lib.resultdoc import load_document
    from harness.lib.store import Store

    if not (store_dir / "store.sqlite").is_file():
        raise ConfigError(f"{store_dir}: no harness store here; name one with --store DIR")
    store = Store(store_dir)
    try:
        return load_document(store, run)
    finally:
        store.close()


def _run_suite(args: argparse.Namespace, console: Console, suite: Any, store_dir: Path) -> dict[str, Any]:
    """Run ``suite`` as ``harness run`` does (library output to its run.log); its result document."""
    from harness.cli.common import load_plugins
    from harness.lib.console import RunConsole, library_output_to
    from harness.lib.interrupt import recording
    from harness.lib.resultdoc import result_document
    from harness.run.runner import Runner, RunOptions

    pm, registries = load_plugins()
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    options = RunOptions(reports_root=args.reports, store_dir=store_dir)
    runner = Runner(suite, pm, registries, RunConsole(console, quiet=quiet), options)
    try:
        with recording(runner.store, runner.run_id):
            if verbose:
                return result_document(runner.run())
            with library_output_to(runner.report_dir / "run.log", console):
                return result_document(runner.run())
    finally:
        runner.store.close()


def _result(args: argparse.Namespace, console: Console, loaded: Any, store_dir: Path) -> dict[str, Any]:
    """The run to advise on: stored (``--run``, with ``--full-run``) or run now with the arms."""
    from harness.errors import ConfigError
    from harness.tools.advise.arms import arms_suite, full_suite, with_full_arm

    if args.run:
        if args.full:
            raise ConfigError("--full trains a full fine-tuning arm; with --run, name a stored one with --full-run RUN")
        doc = _stored(store_dir, args.run)
        return with_full_arm(doc, _stored(store_dir, args.full_run)) if args.full_run else doc
    if args.full_run:
        raise ConfigError("--full-run goes with --run (a stored run to add the full fine-tuning arm to)")
    try:
        shots = [int(k) for k in args.shots.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--shots {args.shots!r}: expected comma-separated integers") from None
    doc = _run_suite(args, console, arms_suite(loaded, shots, args.benchmark), store_dir)
    return with_full_arm(doc, _run_suite(args, console, full_suite(loaded, args.benchmark), store_dir)) if args.full else doc


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.suite.config import load_suite
    from harness.tools.advise import advise, load_rules, measure_arms, write_advice
    from harness.tools.advise.measure import ArmKind, read_prompt_costs
    from harness.tools.advise.render import render

    loaded = load_suite(args.suite)
    suite = loaded.suite
    store_dir = args.store or loaded.dir / (suite.store or ".harness")
    rules = load_rules(
        suite.advise.rules if suite.advise else None, lambda loc: loaded.where(("advise", "rules", *loc)), args.rules
    )
    costs = read_prompt_costs(args.prompt_costs) if args.prompt_costs else None
    doc = _result(args, console, loaded, store_dir)
    trained: ArmKind = "full" if suite.train is not None and suite.train.name.startswith("full") else "lora"
    measured = measure_arms(doc, args.benchmark, costs, suite.gating.alpha, suite.seed, trained)
    traffic, prices = _deployment(args, suite.deployment)
    advice = advise(measured, traffic, prices, rules)
    render(advice, console)
    out = write_advice(advice, args.out or args.reports / doc["run_id"] / "advice.json")
    console.print(f"wrote {out}")
    return 0
