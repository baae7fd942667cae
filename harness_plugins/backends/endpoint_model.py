"""The :class:`~harness.lib.model_api.ModelAPI` of a model behind an OpenAI-compatible server.

Log-likelihoods come from ``/completions`` with ``echo`` and ``logprobs`` (the prompt's own
per-token log-probabilities; vLLM offers them), the prompt sent as token ids from the local
tokenizer so that context and continuation split exactly as on the ``hf`` backend.  Generation
sends the already rendered prompt as token ids too; whole conversations go to
``/chat/completions``.  Every call goes through the one :class:`~harness.lib.endpoint.EndpointClient`
(retries, backoff, bounded concurrency, key redaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.lib.endpoint import EndpointClient, EndpointError
from harness.lib.model_api import (
    Capabilities,
    ChoiceRequest,
    GenerationConfig,
    ModelAPI,
    Scored,
    cut_at_stop,
)

from harness.lib.hf.scoring import _Encoder
from harness.lib.hf.text import TokenizerText

PROBE_PROMPT = "The capital of France is Paris. The capital of Italy is"
"""A fixed text whose per-token log-probabilities identify the served weights in the cache key."""


MAX_SERVER_STOPS = 4
"""The OpenAI API accepts at most four ``stop`` sequences (vLLM's server refuses a fifth with
HTTP 400); a generation with more (HumanEval has six) sends the first four and cuts the returned
text at every one of them itself."""


class EndpointModel(TokenizerText, ModelAPI):
    """A served model, scored and sampled over HTTP; tokenised locally."""

    def __init__(self, client: EndpointClient, tokenizer: Any, max_length: int, *, logprobs: bool = True) -> None:
        self.client, self.tokenizer, self.max_length = client, tokenizer, max_length
        self.server: Any = None
        """The server process this model started (``vllm_server``), kept alive with it."""
        self.capabilities = Capabilities(loglikelihood=logprobs, generate=True, chat=True)
        self._encoder = _Encoder(tokenizer)

    # -- log-likelihoods ------------------------------------------------------------------

    def _echo(self, tokens: Sequence[int]) -> dict[str, Any]:
        choice = self.client.complete(list(tokens), {"max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1})
        logprobs = choice.get("logprobs") or {}
        if len(logprobs.get("token_logprobs") or []) < len(tokens):
            raise EndpointError("/completions: the server returned no prompt log-probabilities (echo)", kind="parse")
        return logprobs

    def _score_pair(self, pair: tuple[str, str]) -> Scored:
        ctx, cont = self._encoder.pair(*pair)
        tokens = (ctx + cont)[-self.max_length :]
        logprobs = self._echo(tokens)
        span = range(len(tokens) - len(cont), len(tokens))
        total = sum(float(logprobs["token_logprobs"][i]) for i in span)
        greedy = all(_top(logprobs["top_logprobs"][i]) == logprobs["tokens"][i] for i in span)
        return total, greedy

    def choice_loglikelihoods(self, requests: Sequence[ChoiceRequest], batch_size: int = 8) -> list[list[Scored]]:
        pairs = [(ctx, cont) for ctx, conts in requests for cont in conts]
        flat = iter(self.client.map_calls(self._score_pair, pairs))
        return [[next(flat) for _ in conts] for _, conts in requests]

    def token_logprobs(self, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8) -> list[list[float]]:
        def one(job: tuple[Sequence[int], int]) -> list[float]:
            tokens, n = job
            values = self._echo(tokens)["token_logprobs"]
            return [float(v) for v in values[len(tokens) - n : len(tokens)]]

        return self.client.map_calls(one, list(sequences))

    def probe(self) -> list[float]:
        """The probe text's token log-probabilities, rounded (a fingerprint of the weights)."""
        tokens = self.encode(PROBE_PROMPT, add_bos=True)
        return [round(float(v), 3) for v in self._echo(tokens)["token_logprobs"][1 : len(tokens)]]

    # -- generation -----------------------------------------------------------------------

    def _params(self, config: GenerationConfig, index: int) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": config.max_new_tokens, "temperature": config.temperature}
        if config.temperature > 0:
            params.update(top_p=config.top_p, seed=config.seed + index)
        if config.stop:  # the server stops at the first few; cut_at_stop applies them all
            params["stop"] = list(config.stop)[:MAX_SERVER_STOPS]
        return params

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        def one(job: tuple[int, str]) -> str:
            index, prompt = job
            choice = self.client.complete(self.encode(prompt), self._params(config, index))
            return cut_at_stop(str(choice.get("text") or ""), config.stop)

        return self.client.map_calls(one, list(enumerate(prompts)))

    def generate_chat(self, conversations: Sequence[Sequence[dict[str, str]]], config: GenerationConfig) -> list[str]:
        """Through ``/chat/completions``: the server renders with its own chat template."""

        def one(job: tuple[int, Sequence[dict[str, str]]]) -> str:
            index, messages = job
            completion = self.client.chat(list(messages), self._params(config, index), logprobs=False)
            return cut_at_stop(completion.text, config.stop)

        return self.client.map_calls(one, list(enumerate(conversations)))

    def close(self) -> None:
        """Close the connections and stop the server this model started, if any."""
        self.client.close()
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()

    # -- text -----------------------------------------------------------------------------



def _top(entry: Any) -> str | None:
    """The most likely token of one ``top_logprobs`` entry (a ``{token: logprob}`` object)."""
    if not entry:
        return None
    best: str = max(entry.items(), key=lambda kv: kv[1])[0]
    return best
