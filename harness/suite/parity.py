"""How a suite describes the two pipelines that parity compares, and the parity stage itself.

The offline evaluation pipeline and the production serving configuration are described by the
same model, :class:`PipelineSpec`, so that every difference between them is a difference of one
named field: the chat template, the system prompt, special-token handling, sampling parameters
(including the defaults a server takes from the model's ``generation_config.json``),
preprocessing, postprocessing.  Production may also name a live OpenAI-compatible endpoint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from harness.lib.pipeline_spec import EndpointSpec, PipelineSpec, PostprocessSpec, PreprocessSpec, SamplingSpec
from harness.lib.refs import ComponentRef, DataSource, StrictModel

__all__ = [
    "SEVERITY_RANK",
    "EndpointSpec",
    "ParityGateSpec",
    "ParitySpec",
    "PipelineSpec",
    "PostprocessSpec",
    "PreprocessSpec",
    "SamplingSpec",
    "Severity",
]

Severity = Literal["high", "medium", "low"]
SEVERITY_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3}


class ParityGateSpec(StrictModel):
    """Parity checks as gates: a check fails when it reports a finding at or above ``fail_on``."""

    fail_on: Severity = Field("high", description="lowest finding severity that fails a check's gate")
    blocking: bool = Field(True, description="whether a failing parity gate fails the run")


def _default_checks() -> dict[str, ComponentRef]:
    names = ("template", "sampling", "preprocessing", "postprocessing", "traffic_shift", "replay")
    return {n: ComponentRef(name=n) for n in names}


class ParitySpec(StrictModel):
    """The ``parity`` section of a suite."""

    requests: DataSource = Field(
        description="logged production requests (OpenAI chat-completions JSONL, or any reader's "
        "format); a final assistant turn is taken as the request's reference answer"
    )
    offline_set: DataSource | None = Field(
        None, description="the offline evaluation inputs, compared with production traffic"
    )
    offline: PipelineSpec = Field(default_factory=PipelineSpec, description="the offline evaluation pipeline")
    production: PipelineSpec = Field(default_factory=PipelineSpec, description="the production serving configuration")
    checks: dict[str, ComponentRef] = Field(default_factory=_default_checks, description="parity checks to run (label -> check)")
    gate: ParityGateSpec | None = Field(None, description="turn every check into a gate")
