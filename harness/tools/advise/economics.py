"""Serving cost per arm and the break-even time of training, from measured tokens and hours.

* monthly serving cost of an arm = requests/month x (input tokens/request / 1000 x price per 1k
  input tokens + output tokens/request / 1000 x price per 1k output tokens), the output term only
  when both its price and the arm's output tokens are known;
* training cost = measured training hours x GPU-hour price;
* break-even time = training cost / monthly saving, where the saving is the serving cost of the
  prompting arm one would deploy instead (the best-scoring one) minus that of the trained arm.
  A trained arm that costs as much or more to serve never pays back (infinite break-even).

A trained arm's prompt has no examples: without its own measured prompt cost it is charged the
input tokens of a zero-shot prompting arm of the same run (the same item prompts, no examples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.tools.advise.measure import TRAINED, ArmMeasure, Measurements

DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class Traffic:
    """How much the deployment serves."""

    requests_per_month: float | None = None


@dataclass(frozen=True)
class Prices:
    """What serving tokens and training GPU-hours cost (any one currency)."""

    per_1k_input_tokens: float | None = None
    per_1k_output_tokens: float | None = None
    gpu_hour: float | None = None


@dataclass(frozen=True)
class ArmCost:
    """One arm's serving cost per month (``None`` with a note when it cannot be computed)."""

    arm: str
    input_tokens: float | None
    monthly_cost: float | None
    note: str = ""


@dataclass(frozen=True)
class Economics:
    """Serving costs per arm and what training costs and saves."""

    arms: tuple[ArmCost, ...]
    prompting_arm: str | None
    trained_arm: str | None
    training_hours: float | None
    training_cost: float | None
    monthly_saving: float | None
    break_even_days: float | None
    note: str = ""

    def cost(self, arm: str) -> ArmCost | None:
        return next((c for c in self.arms if c.arm == arm), None)


def input_tokens(arm: ArmMeasure, m: Measurements) -> float | None:
    """Mean input tokens per request of ``arm`` (a trained arm without its own: a zero-shot arm's)."""
    if arm.cost is not None:
        return arm.cost.mean_input_tokens
    if arm.kind in TRAINED:
        zero = [a for a in m.arms if a.kind == "prompting" and a.cost is not None and not a.has_examples]
        return zero[0].cost.mean_input_tokens if zero and zero[0].cost else None
    return None


def arm_cost(arm: ArmMeasure, m: Measurements, traffic: Traffic, prices: Prices) -> ArmCost:
    tokens = input_tokens(arm, m)
    if tokens is None:
        return ArmCost(arm.name, None, None, "input tokens not measured")
    if traffic.requests_per_month is None or prices.per_1k_input_tokens is None:
        return ArmCost(arm.name, tokens, None, "needs requests per month and a price per 1k input tokens")
    per_request = tokens / 1000 * prices.per_1k_input_tokens
    output = arm.cost.output_tokens if arm.cost is not None else None
    note = ""
    if prices.per_1k_output_tokens is not None:
        if output is None:
            note = "output tokens not measured: input tokens only"
        else:
            per_request += output / 1000 * prices.per_1k_output_tokens
    return ArmCost(arm.name, tokens, traffic.requests_per_month * per_request, note)


def economics(m: Measurements, traffic: Traffic, prices: Prices) -> Economics:
    """Serving cost of every arm, and the break-even time of the best trained arm against the
    best prompting arm (see the module docstring)."""
    costs = tuple(arm_cost(a, m, traffic, prices) for a in m.arms)
    prompting, trained = m.best_of(("prompting",)), m.best_of(TRAINED)
    hours = trained.train_seconds / 3600 if trained and trained.train_seconds is not None else None
    training_cost = hours * prices.gpu_hour if hours is not None and prices.gpu_hour is not None else None
    by_arm = {c.arm: c for c in costs}
    saving = None
    if prompting and trained:
        before, after = by_arm[prompting.name].monthly_cost, by_arm[trained.name].monthly_cost
        saving = before - after if before is not None and after is not None else None
    days = None
    if training_cost is not None and saving is not None:
        days = training_cost / saving * DAYS_PER_MONTH if saving > 0 else math.inf
    note = _missing(prompting, trained, hours, prices, saving)
    return Economics(costs, prompting.name if prompting else None, trained.name if trained else None,
                     hours, training_cost, saving, days, note)


def _missing(prompting: ArmMeasure | None, trained: ArmMeasure | None, hours: float | None, prices: Prices,
             saving: float | None) -> str:
    """Why no break-even time could be computed ("" when it could)."""
    if prompting is None or trained is None:
        return "needs a prompting arm and a trained arm"
    if hours is None:
        return f"no measured training time for {trained.name}"
    if prices.gpu_hour is None:
        return "needs a GPU-hour price"
    if saving is None:
        return "needs serving costs of both arms (traffic, price per 1k input tokens, input tokens)"
    return ""
