"""What a run records about its arms beyond the gates: each prompting arm's prompt cost (every
prompt variant, and the zero-shot base model beside them), and every pair of arms with the
prompting rule's verdict.

Both go into the ``RunResult`` (``prompt_costs``, ``arm_pairs``) and from there into
``result.json`` and the reports; ``harness advise`` reads them back from the stored document.
Neither changes the exit code when it can be computed; a measurement that fails is recorded
through ``on_error`` (exit 3 unless a gate already failed), never skipped in silence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from harness.errors import EXIT_BAD_INPUT, HarnessError
from harness.lib.console import RunConsole
from harness.plugin.components import Benchmark
from harness.run.arms import ArmPlan
from harness.run.plan import RunPlan
from harness.stages.evaluate import Evaluator
from harness.suite.arms import BASE
from harness.stages.pairs import compare_run_arms, comparison_document
from harness.stages.prompt_costs import measure_prompt_cost
from harness.types import RunResult

OnError = Callable[[str, str], None]
"""``on_error(who, message)``: record a failure outside the gates."""


def measures_cost(arm: ArmPlan, arms: Mapping[str, ArmPlan]) -> bool:
    """Whether the run measures ``arm``'s prompt cost: a prompt variant, or the zero-shot base
    model of a run that has one (what a trained arm is charged for serving)."""
    return bool(arm.prompts) or (arm.name == BASE and any(a.prompts for a in arms.values()))


def record_prompt_cost(
    result: RunResult, console: RunConsole, evaluator: Evaluator, arm: ArmPlan,
    benchmarks: Mapping[str, Benchmark], on_error: OnError,
) -> None:  # fmt: skip
    """Measure ``arm``'s prompt cost over the benchmarks it has results on and put it in
    ``result.prompt_costs`` under its result label."""
    asked = {label: bench for label, bench in benchmarks.items() if arm.label in result.benchmarks.get(label, {})}
    if not asked:
        return
    try:
        cost = measure_prompt_cost(evaluator, asked)
    except HarnessError as exc:
        if exc.exit_code == EXIT_BAD_INPUT:
            raise
        on_error(f"the prompt cost of arm {arm.name!r}", str(exc))
        return
    except Exception as exc:  # recorded: the gates and reports still run
        on_error(f"the prompt cost of arm {arm.name!r}", f"{type(exc).__name__}: {exc}")
        return
    if cost is None:
        console.stage(
            "evaluate", f"{arm.label}: no prompt cost: none of its benchmarks ({', '.join(asked)}) states the "
            "conversations it sends (Benchmark.item_messages)", style="yellow",
        )  # fmt: skip
        return
    result.prompt_costs[arm.label] = cost
    console.stage(
        "evaluate", f"{arm.label}: prompt cost {cost.example_tokens:,.0f} example tokens "
        f"({cost.context_share:.1%} of the context), {cost.mean_input_tokens:,.0f} input tokens per request",
    )  # fmt: skip


def record_arm_pairs(
    result: RunResult, console: RunConsole, plan: RunPlan, clusters: Mapping[str, Mapping[str, str] | None],
    on_error: OnError,
) -> None:  # fmt: skip
    """Compare every pair of arms where the run has more than two, or a prompt variant, on a
    benchmark (with the gates' statistics, alpha and the suite's seed; ``clusters``: per
    benchmark, item id -> source); put the comparison in ``result.arm_pairs`` and print the
    rule's verdicts."""
    suite = plan.loaded.suite
    variants = {arm.label for arm in plan.arms.values() if arm.prompts}
    try:
        comparison = compare_run_arms(result, variants, suite.gating.alpha, suite.seed, plan.statistics, clusters)
    except Exception as exc:  # recorded: the reports still run
        on_error("the arm comparison", f"{type(exc).__name__}: {exc}")
        return
    if comparison is None:
        return
    result.arm_pairs = comparison_document(comparison)
    for decision in comparison.decisions:
        console.stage("arms", f"{decision.benchmark}: {decision.verdict}: {decision.reason}")
