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

    temperature: float | None = Field(None, ge=0, description="sampling temperature; null: the generation_config default")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling threshold")
    top_k: int | None = Field(None, ge=-1, description="top-k sampling (-1: off)")
    max_tokens: int | None = Field(None, ge=1, description="longest generated answer in tokens")
    stop: list[str] | None = Field(None, description="stop strings")
    repetition_penalty: float | None = Field(None, gt=0, description="penalty on repeated tokens")
    seed: int | None = Field(None, description="sampling seed")
    generation_config: str = Field(
        "ignore",
        description="'auto': take unset values from the model's generation_config.json (as vLLM's "
        "server does); a path: from that file; 'ignore': neutral defaults",
    )


class PreprocessSpec(StrictModel):
    """What happens to request text before it reaches the model."""

    normalize: Literal["none", "NFC", "NFKC", "NFD", "NFKD"] = Field("none", description="Unicode normalization of the prompt")
    whitespace: Literal["keep", "strip", "collapse"] = Field("keep", description="whitespace handling of the prompt")
    max_input_tokens: int | None = Field(None, ge=1, description="truncate the prompt to this many tokens")
    truncation_side: Literal["left", "right"] = Field("left", description="which end of a too-long prompt is cut")


class PostprocessSpec(StrictModel):
    """How an answer is read from the model's text.

    * ``contains``: the answer passes when the reference occurs anywhere in the text (lenient);
    * ``strip``: the whole text, stripped, is the answer;
    * ``regex``: the first match of ``pattern`` (its first group, when it has one);
    * ``json``: the text must be a JSON object (strict: nothing around it), valid against
      ``schema`` when given; the answer is its ``field``;
    * ``lenient_json``: the first ``{...}`` object found in the text, then as ``json``.
    """

    parser: Literal["contains", "strip", "regex", "json", "lenient_json"] = Field("strip", description="how the answer is extracted from the output")
    pattern: str | None = Field(None, description="regular expression for the regex parser")
    field: str | None = Field(None, description="JSON key holding the answer")
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="JSON schema the json parsers validate against")

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
    timeout_s: float = Field(60.0, gt=0, description="timeout of one request in seconds")
    max_retries: int = Field(3, ge=0, description="retries of a failed request")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")


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
    add_generation_prompt: bool = Field(True, description="append the assistant turn opener to the prompt")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="sampling parameters")
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec, description="prompt preprocessing")
    postprocess: PostprocessSpec = Field(default_factory=PostprocessSpec, description="how the answer is parsed from the output")
    endpoint: EndpointSpec | None = Field(None, description="a live OpenAI-compatible endpoint (production only)")

    @model_validator(mode="after")
    def _one_template(self) -> PipelineSpec:
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("give chat_template or chat_template_file, not both")
        return self
