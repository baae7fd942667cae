"""Prompt variants: an arm that is another arm's model with a system prompt, ``k`` seeded
examples from the training data, or the ``k`` nearest training examples per item.

A variant wraps the inner model's :class:`~harness.lib.model_api.ModelAPI`: conversations it
renders (``render_chat`` / ``generate_chat``) get the system prompt and the example turns
before the item's own messages, so every chat benchmark serves a prompting arm unchanged.
``lm_eval_model`` is ``None``, so lm-eval goes through the generic adapter and its
``apply_chat_template`` reaches the wrapper.  Raw-text requests (log-likelihoods of a text
prompt, generation from a text prompt) pass through unchanged: a variant cannot know where the
examples would go in free text, so a benchmark that does not render chat is refused on a
variant arm (:func:`check_variant_benchmark`) rather than silently scored zero-shot.

The conversation a variant sends is::

    [system]  +  example 1 (user, assistant, ...)  +  ...  +  example k  +  the item's messages

* ``system``: the variant's system prompt.  When the item brings its own system message, the
  variant's text goes first in that one message (``variant + "\\n\\n" + item``), because most
  chat templates accept a single leading system message; the item's instructions stay, after
  the variant's.
* ``shots``: ``k`` examples drawn once, the same for every item: the ``k`` pool records with the
  smallest ``sha256(f"{seed}:{digest}")`` (:func:`harness.lib.data.seeded_sample`), in pool
  order.  No RNG state, so a seed always picks the same records, and a record added to the pool
  changes the draw only where it ranks in.
* ``nearest``: per item, the ``k`` pool records whose first user message is closest (cosine of
  all-MiniLM-L6-v2 embeddings) to the item's last user message, least similar first so the
  closest example sits next to the item (the order Liu et al. 2021, "What makes good in-context
  examples for GPT-3?", found best).  A pool record whose first user message equals the item's
  text is skipped: a held-out item must never see itself with its answer.  The pool is
  embedded once per wrapper, on first use.

Only the examples' user and assistant turns are used (their own system messages are not).
Before a prompt is used, the examples' tokens plus the item's are compared with the model's
context; a variant that does not fit is a ``ConfigError`` with the counts (for ``shots`` when
the wrapper is built, for ``nearest`` when an item is rendered, since its examples depend on it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from pydantic import Field, model_validator

from harness.errors import ConfigError, require
from harness.lib.data import seeded_sample
from harness.lib.model_api import (
    ChoiceRequest,
    GenerationConfig,
    ModelAPI,
    Scored,
    TokenizerFacts,
)
from harness.lib.refs import StrictModel
from harness.types import Conversation
from harness.types import PromptCost as PromptCost  # re-exported: the value prompt_cost returns

Messages = Sequence[dict[str, str]]
#: Texts in, one normalised embedding row per text out (``all-MiniLM-L6-v2`` by default).
Embedder = Callable[[Sequence[str]], Any]


class PromptSpec(StrictModel):
    """How a prompting arm changes its inner arm's conversations."""

    system: str | None = Field(None, description="a system prompt put before every conversation")
    shots: int = Field(0, ge=0, description="k examples drawn (seeded) from the curated training data, the same for every item")
    nearest: int = Field(0, ge=0, description="the k training examples nearest to each item (all-MiniLM-L6-v2 cosine)")
    seed: int | None = Field(None, description="seed of the drawn examples; the suite's seed when unset")

    @model_validator(mode="after")
    def _one_kind(self) -> PromptSpec:
        if self.shots and self.nearest:
            raise ValueError("a prompt variant takes either 'shots' or 'nearest', not both")
        return self

    @property
    def needs_examples(self) -> bool:
        return bool(self.shots or self.nearest)

    @property
    def k(self) -> int:
        """How many examples each prompt carries."""
        return self.shots or self.nearest


def pool_digest(pool: Sequence[Conversation]) -> str:
    """sha256 over the pool records' content digests, in order: changes when any record does."""
    h = hashlib.sha256()
    for conv in pool:
        h.update(conv.digest().encode("ascii"))
    return h.hexdigest()


def prompt_material(spec: PromptSpec, pool: Sequence[Conversation], seed: int) -> dict[str, Any]:
    """What identifies the variant for the cache: the system prompt, the kind and number of
    examples, the seed that draws them (``shots`` only: nothing else depends on it) and the
    pool's digest (only when examples are used, so a system-prompt variant's cache survives a
    change of training data); ``nearest`` also names the embedder that ranks the pool."""
    from harness.lib.embed import EMBEDDER_ID

    material: dict[str, Any] = {"system": spec.system}
    if spec.shots:
        material.update(shots=spec.shots, seed=_seed(spec, seed))
    if spec.nearest:
        material.update(nearest=spec.nearest, embedder=EMBEDDER_ID)
    if spec.needs_examples:
        material["examples"] = pool_digest(pool)
    return material


def prompted(
    api: ModelAPI,
    spec: PromptSpec,
    pool: Sequence[Conversation],
    seed: int,
    *,
    embedder: Embedder | None = None,
) -> PromptedModel:
    """``api`` seen through the variant; raises ``ConfigError`` (exit 2) with the token counts
    when the examples do not fit the model's context.  ``embedder`` replaces MiniLM (tests)."""
    return PromptedModel(api, spec, pool, seed, embedder=embedder)


def check_variant_benchmark(bench_name: str, needs: Sequence[str]) -> str | None:
    """Why benchmark ``bench_name`` (whose required capabilities are ``needs``) cannot run on a
    prompt-variant arm, or ``None`` when it can: a variant changes rendered conversations only,
    so a benchmark that scores raw text (no ``chat`` capability) would silently run zero-shot."""
    if "chat" in needs:
        return None
    return (
        f"benchmark {bench_name!r} scores raw text prompts, which a prompt variant does not change; "
        "a prompt-variant arm runs only chat benchmarks (those that declare the 'chat' capability)"
    )


def prompt_cost(
    api: ModelAPI,
    spec: PromptSpec,
    pool: Sequence[Conversation],
    seed: int,
    items_messages: Sequence[Messages],
    *,
    embedder: Embedder | None = None,
) -> PromptCost:
    """The :class:`PromptCost` of the variant over these items (each a conversation, as the
    benchmark would send it); raises ``ConfigError`` when one of them does not fit."""
    if not items_messages:
        raise ConfigError("prompt_cost needs at least one item")
    model = PromptedModel(api, spec, pool, seed, embedder=embedder)
    if spec.shots:
        longest = max(len(api.encode(api.render_chat(list(m)))) for m in items_messages)
        model.check_fits(model.examples_for(()), longest, "longest item")
    examples, inputs = [], []
    for messages in items_messages:
        examples.append(model.example_tokens(model.examples_for(messages)))
        inputs.append(len(api.encode(model.render_chat(messages))))
    mean_examples = sum(examples) / len(examples)
    return PromptCost(
        example_tokens=mean_examples,
        mean_input_tokens=sum(inputs) / len(inputs),
        context_share=mean_examples / api.tokenizer_facts().max_length,
    )


def _seed(spec: PromptSpec, seed: int) -> int:
    return spec.seed if spec.seed is not None else seed


def _first_user(conv: Conversation) -> str:
    return next((m.content for m in conv.messages if m.role == "user"), "")


def _last_user(messages: Messages) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def _turns(conv: Conversation) -> list[dict[str, str]]:
    """An example's user and assistant messages, in order."""
    return [{"role": m.role, "content": m.content} for m in conv.messages if m.role in ("user", "assistant")]


def _default_embedder(texts: Sequence[str]) -> Any:
    from harness.lib.embed import embed

    return embed(texts)


class PromptedModel(ModelAPI):
    """A :class:`ModelAPI` that adds a variant's system prompt and examples to every
    conversation it renders and delegates everything else to the inner model."""

    def __init__(
        self,
        inner: ModelAPI,
        spec: PromptSpec,
        pool: Sequence[Conversation],
        seed: int,
        *,
        embedder: Embedder | None = None,
    ) -> None:
        self.inner = inner
        self.spec = spec
        self.pool = [c for c in pool if _turns(c)]
        self.seed = _seed(spec, seed)
        self.capabilities = inner.capabilities
        self._embedder = embedder or _default_embedder
        self._example_tokens: dict[tuple[int, ...], int] = {}
        if spec.needs_examples and spec.k > len(self.pool):
            kind = "shots" if spec.shots else "nearest"
            raise ConfigError(f"prompt variant {kind}: {spec.k} asks for more examples than the {len(self.pool)} training records")
        if spec.shots:
            self.check_fits(self._shots, 0, "")

    # -- the variant ---------------------------------------------------------------------------

    @cached_property
    def _shots(self) -> tuple[int, ...]:
        """Pool indices of the seeded examples (the same for every item), in pool order."""
        indexed = list(enumerate(self.pool))
        chosen = seeded_sample(indexed, self.spec.shots, self.seed, key=lambda p: p[1].digest())
        return tuple(i for i, _ in chosen)

    @cached_property
    def _pool_vectors(self) -> Any:
        """The pool's first user messages, embedded once (normalised rows)."""
        np = require("numpy")
        return np.asarray(self._embedder([_first_user(c) for c in self.pool]), dtype=np.float32)

    def _nearest(self, text: str) -> tuple[int, ...]:
        """Pool indices of the ``k`` records nearest to ``text`` (itself excluded), least
        similar first; ties go to the earlier record."""
        np = require("numpy")
        query = np.asarray(self._embedder([text]), dtype=np.float32)[0]
        sims = self._pool_vectors @ query
        own = text.strip()
        order = [int(i) for i in np.argsort(-sims, kind="stable") if _first_user(self.pool[int(i)]).strip() != own]
        return tuple(reversed(order[: self.spec.nearest]))

    def examples_for(self, messages: Messages) -> tuple[int, ...]:
        """Pool indices of the examples this conversation gets, in prompt order."""
        if self.spec.shots:
            return self._shots
        if self.spec.nearest:
            return self._nearest(_last_user(messages))
        return ()

    def conversation(self, messages: Messages, examples: Sequence[int] | None = None) -> list[dict[str, str]]:
        """The conversation the variant sends for ``messages`` (see the module's doc)."""
        chosen = self.examples_for(messages) if examples is None else examples
        own = [dict(m) for m in messages]
        system = [s for s in (self.spec.system, own[0]["content"] if own and own[0].get("role") == "system" else None) if s]
        if own and own[0].get("role") == "system":
            own = own[1:]
        head = [{"role": "system", "content": "\n\n".join(system)}] if system else []
        turns = [turn for i in chosen for turn in _turns(self.pool[i])]
        return head + turns + own

    def example_tokens(self, examples: Sequence[int]) -> int:
        """Tokens the examples take: their turns (and the system prompt) rendered alone."""
        key = tuple(examples)
        if key not in self._example_tokens:
            head = [{"role": "system", "content": self.spec.system}] if self.spec.system else []
            turns = head + [turn for i in key for turn in _turns(self.pool[i])]
            self._example_tokens[key] = len(self.inner.encode(self.inner.render_chat(turns, False))) if turns else 0
        return self._example_tokens[key]

    def check_fits(self, examples: Sequence[int], item_tokens: int, what: str) -> None:
        """``ConfigError`` with the counts when the examples plus the item exceed the context."""
        context = self.inner.tokenizer_facts().max_length
        taken = self.example_tokens(examples)
        if taken + item_tokens > context:
            kind = "nearest examples" if self.spec.nearest else "examples"
            item = f" + {what} {item_tokens:,}" if what else ""
            raise ConfigError(
                f"prompt variant: {len(examples)} {kind} take {taken:,} tokens{item} > context {context:,}"
            )

    def _prepare(self, messages: Messages, add_generation_prompt: bool = True) -> list[dict[str, str]]:
        """The variant's conversation for ``messages``, checked against the context."""
        examples = self.examples_for(messages)
        if examples:
            item_tokens = len(self.inner.encode(self.inner.render_chat(list(messages), add_generation_prompt)))
            self.check_fits(examples, item_tokens, "item")
        return self.conversation(messages, examples)

    # -- the model API -------------------------------------------------------------------------

    def render_chat(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        return self.inner.render_chat(self._prepare(messages, add_generation_prompt), add_generation_prompt)

    def generate_chat(self, conversations: Sequence[Messages], config: GenerationConfig) -> list[str]:
        return self.inner.generate_chat([self._prepare(c) for c in conversations], config)

    def choice_loglikelihoods(self, requests: Sequence[ChoiceRequest], batch_size: int = 8) -> list[list[Scored]]:
        return self.inner.choice_loglikelihoods(requests, batch_size)

    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 8) -> list[Scored]:
        return self.inner.loglikelihood(requests, batch_size)

    def token_logprobs(self, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8) -> list[list[float]]:
        return self.inner.token_logprobs(sequences, batch_size)

    def loglikelihood_rolling(self, texts: Sequence[str], batch_size: int = 8) -> list[float]:
        return self.inner.loglikelihood_rolling(texts, batch_size)

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        return self.inner.generate(prompts, config)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return self.inner.encode(text, add_bos)

    def tokenizer_facts(self) -> TokenizerFacts:
        return self.inner.tokenizer_facts()

    def close(self) -> None:
        self.inner.close()

    def lm_eval_model(self, batch_size: int) -> Any:
        """``None``: lm-eval must reach :meth:`render_chat` through the generic adapter (a
        native ``HFLM`` would render the inner model's chat template without the variant)."""
        return None
