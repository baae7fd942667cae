"""The suite's ``deployment:`` and ``advise:`` blocks, read by ``harness advise``.

``deployment`` states the traffic and prices the advice's economics use (the command's flags
override it); ``advise`` overrides thresholds of the decision rules by rule id.  Neither changes
what ``harness run`` does.
"""

from __future__ import annotations

from pydantic import Field

from harness.lib.refs import StrictModel


class DeploymentSpec(StrictModel):
    """Traffic and prices of the deployment the advice is for."""

    requests_per_month: float | None = Field(None, ge=0, description="requests the model serves per month")
    price_per_1k_input_tokens: float | None = Field(None, ge=0, description="serving price of 1,000 input tokens")
    price_per_1k_output_tokens: float | None = Field(None, ge=0, description="serving price of 1,000 output tokens")
    gpu_hour_price: float | None = Field(None, ge=0, description="price of one GPU-hour of training")


class AdviseSpec(StrictModel):
    """Overrides of ``harness advise``'s decision rules (see docs/advise.md)."""

    rules: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="rule id -> threshold name -> value (e.g. few_examples: {min_examples: 50})"
    )
