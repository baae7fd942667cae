"""How a serving pipeline is described: chat template, system prompt, special tokens, sampling
parameters, preprocessing, postprocessing, and optionally a live OpenAI-compatible endpoint.

The offline evaluation pipeline and the production serving configuration are described by the
same model, :class:`PipelineSpec`, so that every difference between them is a difference of one
named field.  ``harness.lib.pipeline`` makes a description executable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from harness.lib.refs import StrictModel

class SamplingSpec(StrictModel):
    """Sampling parameters as a client or server sets them; ``None`` means "not set here".

    An unset parameter takes the model's ``generation_config.json`` value when
    ``generation_config`` is ``auto`` (what vLLM's server does by default) or a file, and the
    neutral default (greedy, no nucleus, no penalty) otherwise.
    """

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = None
    generation_config: str = Field(
        "ignore",
        description="'auto': take unset values from the model's generation_config.json (as vLLM's "
        "server does); a path: from that file; 'ignore': neutral defaults",
    )


class PreprocessSpec(StrictModel):
    """What happens to request text before it reaches the model."""

    normalize: Literal["none", "NFC", "NFKC", "NFD", "NFKD"] = "none"
    whitespace: Literal["keep", "strip", "collapse"] = "keep"
    max_input_tokens: int | None = Field(None, ge=1, description="truncate the prompt to this many tokens")
    truncation_side: Literal["left", "right"] = "left"


class PostprocessSpec(StrictModel):
    """How an answer is read from the model's text.

    * ``contains``: the answer passes when the reference occurs anywhere in the text (lenient);
    * ``strip``: the whole text, stripped, is the answer;
    * ``regex``: the first match of ``pattern`` (its first group, when it has one);
    * ``json``: the text must be a JSON object (strict: nothing around it), valid against
      ``schema`` when given; the answer is its ``field``;
    * ``lenient_json``: the first ``{...}`` object found in the text, then as ``json``.
    """

    parser: Literal["contains", "strip", "regex", "json", "lenient_json"] = "strip"
    pattern: str | None = None
    field: str | None = Field(None, description="JSON key holding the answer")
    json_schema: dict[str, Any] | None = Field(None, alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _needs(self) -> PostprocessSpec:
        if self.parser == "regex" and not self.pattern:
            raise ValueError("parser 'regex' needs a 'pattern'")
        return self


class EndpointSpec(StrictModel):
    """A live OpenAI-compatible server.  The API key is read from an environment variable only,
    so that it never sits in a suite, a log, a report or the cache."""

    url: str = Field(description="base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the served model name")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    concurrency: int = Field(4, ge=1)


class PipelineSpec(StrictModel):
    """One pipeline (offline evaluation or production serving), field by field."""

    tokenizer: str | None = Field(None, description="tokenizer folder; default: the suite's model")
    chat_template: str | None = Field(None, description="a Jinja chat template; default: the tokenizer's")
    chat_template_file: str | None = Field(None, description="a file holding the chat template")
    system_prompt: str | None = Field(None, description="system prompt the pipeline adds")
    system_prompt_mode: Literal["if_missing", "replace"] = Field(
        "if_missing", description="add the system prompt when a request has none, or replace theirs"
    )
    add_bos: bool = Field(
        False, description="the tokenizer prepends its BOS token to the rendered prompt"
    )
    add_generation_prompt: bool = True
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    postprocess: PostprocessSpec = Field(default_factory=PostprocessSpec)
    endpoint: EndpointSpec | None = None

    @model_validator(mode="after")
    def _one_template(self) -> PipelineSpec:
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("give chat_template or chat_template_file, not both")
        return self
