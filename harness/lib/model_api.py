"""The model API every benchmark, filter and parity check calls, whatever backend loaded the model.

In the spirit of lm-eval's ``LM`` class: a backend loads one model reference (plus adapter) and
returns a :class:`~harness.lib.models.LoadedModel` whose ``api`` is a :class:`ModelAPI`.  Callers
use only these methods, so a new backend (an endpoint, vLLM) serves every benchmark without the
benchmark importing it.  A backend states what it can do in :class:`Capabilities`; the run plan
refuses a benchmark that needs a capability the backend lacks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: ``(context, continuations)``: score every continuation after the same context.
ChoiceRequest = tuple[str, Sequence[str]]
#: ``(log-probability, is_greedy)`` of one continuation.
Scored = tuple[float, bool]


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate: token budget, sampling (temperature 0 is greedy), stop strings, seed."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    batch_size: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What a backend's models can do; the run plan checks benchmarks' needs against these."""

    loglikelihood: bool = True  # log-probabilities of given text (scoring, perplexity)
    generate: bool = True
    chat: bool = True  # a chat template to render conversations

    def missing(self, needs: Sequence[str]) -> list[str]:
        """The capabilities in ``needs`` this backend lacks (unknown names count as missing)."""
        return [need for need in needs if not getattr(self, need, False)]


@dataclass(frozen=True)
class TokenizerFacts:
    """What callers may need to know about the tokenizer without touching it."""

    max_length: int
    bos_token: str | None
    eos_token: str | None


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


class ModelAPI(ABC):
    """One loaded model, as benchmarks see it.  Every method is batched; order is preserved."""

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def choice_loglikelihoods(self, requests: Sequence[ChoiceRequest], batch_size: int = 8) -> list[list[Scored]]:
        """For each ``(context, continuations)``: ``(log-probability, is_greedy)`` of each
        continuation, in order (lm-eval's ``loglikelihood``, grouped by context)."""

    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 8) -> list[Scored]:
        """lm-eval's ``loglikelihood``: ``(logprob, is_greedy)`` of each continuation."""
        scored = self.choice_loglikelihoods([(ctx, [cont]) for ctx, cont in requests], batch_size)
        return [row[0] for row in scored]

    @abstractmethod
    def token_logprobs(self, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8) -> list[list[float]]:
        """For each ``(tokens, n)``: log-probability of each of the last ``n`` tokens given the
        tokens before it (the building block of rolling log-likelihood and perplexity)."""

    def loglikelihood_rolling(self, texts: Sequence[str], batch_size: int = 8) -> list[float]:
        """Total log-probability of each text (lm-eval's ``loglikelihood_rolling``), in windows
        of :meth:`tokenizer_facts`'s ``max_length`` tokens without overlap."""
        limit = self.tokenizer_facts().max_length
        passes, owners = [], []
        for i, text in enumerate(texts):
            tokens = self.encode(text, add_bos=True)
            for start in range(1, len(tokens), limit - 1):
                window = tokens[max(0, start - 1) : start + limit - 1]
                passes.append((window, len(window) - 1))
                owners.append(i)
        totals = [0.0] * len(texts)
        for owner, logprobs in zip(owners, self.token_logprobs(passes, batch_size)):
            totals[owner] += sum(logprobs)
        return totals

    @abstractmethod
    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        """One completion per prompt (a prompt may repeat to draw several samples), each cut at
        its first stop string."""

    def generate_chat(self, conversations: Sequence[Sequence[dict[str, str]]], config: GenerationConfig) -> list[str]:
        """One completion per conversation; by default rendered with :meth:`render_chat` and
        sent to :meth:`generate` (an endpoint uses its chat route instead)."""
        return self.generate([self.render_chat(c) for c in conversations], config)

    @abstractmethod
    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation, through the model's chat template."""

    @abstractmethod
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def tokenizer_facts(self) -> TokenizerFacts:
        """Context length and special tokens."""

    def close(self) -> None:
        """Release what the model holds outside this process (a server, connections); nothing
        by default."""
        return None

    def lm_eval_model(self, batch_size: int) -> Any:
        """A native lm-eval ``LM`` (the ``hf`` backend's in-memory ``HFLM``), or ``None``: then
        ``harness.lib.lmeval`` wraps this model in its generic adapter."""
        return None


def model_api(model: object) -> ModelAPI:
    """The :class:`ModelAPI` of a loaded model; a clear error when its backend provides none."""
    api = getattr(model, "api", None)
    if not isinstance(api, ModelAPI):
        ref = getattr(model, "ref", None)
        backend = getattr(ref, "backend", "?")
        raise TypeError(f"backend {backend!r} returned a model without the model API (LoadedModel.api)")
    return api
