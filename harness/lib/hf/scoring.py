"""Native multiple-choice scoring on the ``hf`` backend: the log-likelihood of each continuation
after its context, with the same numbers as lm-evaluation-harness's ``HFLM`` in fewer model calls.

What is kept from ``HFLM`` (``_encode_pair`` and ``_loglikelihood_tokens``), so that both engines
agree item by item:

* tokenisation: trailing whitespace of the context moves to the continuation; the continuation's
  tokens are those of ``context + continuation`` after the tokens of ``context`` alone; special
  tokens are added as the tokenizer does by default unless the text already starts with the
  prefix token (BOS, else EOS); an empty context becomes the prefix token;
* truncation: a context and continuation longer than the model's maximum length plus one lose
  tokens on the left;
* arithmetic: ``log_softmax`` and the sum over the continuation's tokens in the logits' dtype, and
  "greedy" means every continuation token is the argmax of the log-probabilities.

What is faster:

* one row per context (packing): the context's tokens, then each continuation but its last token.
  A 4-D attention mask lets every continuation see the context and its own earlier tokens only,
  and its position ids restart after the context, so each continuation is scored exactly as if it
  followed the context alone, while the context runs once instead of once per choice;
* only the scored positions (the rows are left-padded, so they are a suffix) go through the LM
  head: single-token continuations such as MMLU's letters need the context's last logits only;
* rows are sorted by length and batched across items, so batches carry little padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import require
from harness.lib.models import LoadedModel

Request = tuple[str, Sequence[str]]
"""A context and the continuations to score after it."""
Scored = tuple[float, bool]
"""The summed log-probability of a continuation, and whether it is the greedy continuation."""

DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit"
_PACKING_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class _Row:
    """One model input: a context and the continuations of one request that share it."""

    request: int
    choices: tuple[int, ...]
    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]

    def tokens(self) -> list[int]:
        out = list(self.context)
        for cont in self.continuations:
            out.extend(cont[:-1])
        return out

    def scored_span(self) -> int:
        """Positions whose logits are needed: the context's last one and everything after it."""
        return 1 + sum(len(cont) - 1 for cont in self.continuations)


class _Encoder:
    """``HFLM.tok_encode`` and ``_encode_pair`` with lm-eval's defaults (``add_bos_token`` unset)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        bos = tokenizer.bos_token_id
        self.prefix_id: int = bos if bos is not None else tokenizer.eos_token_id
        self.prefix_text: str = tokenizer.decode([self.prefix_id])
        self._memo: dict[str, list[int]] = {}

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        kwargs: dict[str, bool] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif text.startswith(self.prefix_text):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def context(self, text: str) -> list[int]:
        if text not in self._memo:
            self._memo = {text: self.encode(text)}  # requests come context by context
        return self._memo[text]

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_id:
                return cont[:1], cont[1:]
            return [self.prefix_id], cont
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self.context(context)
        whole = self.encode(context + continuation)
        return ctx, whole[len(ctx) :]


def max_length(model: LoadedModel) -> int:
    """The model's context length, resolved as lm-eval resolves it."""
    config = model.model.config
    config = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(model.tokenizer, "model_max_length", None)
    if limit is not None and limit != _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def _rows(encoder: _Encoder, requests: Sequence[Request], limit: int) -> list[_Row]:
    """Group each request's continuations by their context tokens; a pair that needs truncating
    gets a row of its own, cut on the left exactly as ``HFLM`` cuts it."""
    rows: list[_Row] = []
    for r, (context, continuations) in enumerate(requests):
        shared: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
        for c, continuation in enumerate(continuations):
            ctx, cont = encoder.pair(context, continuation)
            if not ctx or not cont:
                raise ValueError(f"request {r}, choice {c}: empty context or continuation tokens")
            if len(cont) > limit:
                raise ValueError(f"request {r}, choice {c}: continuation longer than {limit} tokens")
            if len(ctx) + len(cont) > limit + 1:
                kept = (ctx + cont)[-(limit + 1) :]
                rows.append(_Row(r, (c,), tuple(kept[: -len(cont)]), (tuple(cont),)))
                continue
            shared.setdefault(tuple(ctx), []).append((c, tuple(cont)))
        for ctx_tokens, members in shared.items():
            choices = tuple(c for c, _ in members)
            rows.append(_Row(r, choices, ctx_tokens, tuple(t for _, t in members)))
    return rows


@dataclass(frozen=True)
class _Layout:
    """One row of model input: tokens, their position ids, and segment ids (0: seen by every
    later token; i > 0: seen only by later tokens of segment i)."""

    tokens: list[int]
    positions: list[int]
    segments: list[int]

    @classmethod
    def causal(cls, tokens: Sequence[int]) -> _Layout:
        return cls(list(tokens), list(range(len(tokens))), [0] * len(tokens))


def _row_layout(row: _Row) -> tuple[_Layout, list[list[int]]]:
    """The packed layout of a row and, for every continuation, the row indices whose logits
    predict each of its tokens."""
    n_ctx = len(row.context)
    positions, segments = list(range(n_ctx)), [0] * n_ctx
    predictors: list[list[int]] = []
    for i, cont in enumerate(row.continuations):
        start = len(positions)
        predictors.append([n_ctx - 1] + list(range(start, start + len(cont) - 1)))
        positions.extend(range(n_ctx, n_ctx + len(cont) - 1))
        segments.extend([i + 1] * (len(cont) - 1))
    return _Layout(row.tokens(), positions, segments), predictors


def _inputs(layouts: Sequence[_Layout], pad: int, dtype: Any) -> tuple[Any, Any, Any]:
    """Left-padded token ids, position ids and the additive 4-D attention mask of a batch."""
    torch = require("torch")
    width = max(len(layout.tokens) for layout in layouts)
    ids = torch.full((len(layouts), width), pad, dtype=torch.long)
    position_ids = torch.zeros((len(layouts), width), dtype=torch.long)
    # Padding attends to itself only, so that no row of the attention is empty.
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(layouts), 1, 1, 1)
    for b, layout in enumerate(layouts):
        offset = width - len(layout.tokens)
        ids[b, offset:] = torch.tensor(layout.tokens)
        position_ids[b, offset:] = torch.tensor(layout.positions)
        seg = torch.tensor(layout.segments)
        causal = torch.ones((len(seg), len(seg)), dtype=torch.bool).tril()
        visible = (seg[None, :] == 0) | (seg[None, :] == seg[:, None])
        allowed[b, 0, offset:, offset:] = causal & visible
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return ids, position_ids, mask


def _suffix_logits(model: LoadedModel, layouts: Sequence[_Layout], keep: int) -> Any:
    """Logits of the last ``keep`` positions of every (left-padded) row: ``[batch, keep, vocab]``.
    Only those positions go through the LM head when the model supports ``logits_to_keep``."""
    torch = require("torch")
    net = model.model
    attention = getattr(net.config, "_attn_implementation", "eager")
    if attention not in _PACKING_ATTENTION:
        raise ValueError(f"native scoring needs sdpa or eager attention, not {attention!r}")
    weight = next(net.parameters())
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids, position_ids, mask = _inputs(layouts, pad, weight.dtype)
    kwargs = {"logits_to_keep": keep} if "logits_to_keep" in _forward_parameters(net) else {}
    with torch.inference_mode():
        out = net(
            input_ids=ids.to(weight.device),
            attention_mask=mask.to(weight.device),
            position_ids=position_ids.to(weight.device),
            use_cache=False,
            **kwargs,
        )
    return out.logits[:, -keep:, :]


def _forward_parameters(net: Any) -> set[str]:
    return set(inspect.signature(net.forward).parameters)


def _score_batch(model: LoadedModel, rows: Sequence[_Row]) -> list[list[Scored]]:
    """One forward pass over a batch of packed rows; the scores of every row's continuations."""
    torch = require("torch")
    functional = require("torch.nn.functional")
    laid_out = [_row_layout(row) for row in rows]
    keep = max(row.scored_span() for row in rows)
    logits = _suffix_logits(model, [layout for layout, _ in laid_out], keep)
    with torch.inference_mode():
        # As HFLM: log_softmax in the logits' own dtype, argmax over the log-probabilities.
        logprobs = functional.log_softmax(logits, dim=-1)
        greedy = logprobs.argmax(dim=-1)
        out: list[list[Scored]] = []
        for b, (row, (layout, predictors)) in enumerate(zip(rows, laid_out)):
            base = keep - len(layout.tokens)  # row index -> index among the kept positions
            scores = []
            for cont, where in zip(row.continuations, predictors):
                index = torch.tensor([base + i for i in where], device=logprobs.device)
                target = torch.tensor(cont, device=logprobs.device)
                picked = logprobs[b, index, target]
                scores.append((float(picked.sum()), bool((greedy[b, index] == target).all())))
            out.append(scores)
    return out


def choice_logprobs(
    model: LoadedModel, requests: Sequence[Request], batch_size: int = 8
) -> list[list[Scored]]:
    """For each ``(context, continuations)``: ``(log-probability, is_greedy)`` of every
    continuation, in order, as lm-eval's ``HFLM.loglikelihood`` would return them."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    model.model.eval()
    rows = _rows(_Encoder(model.tokenizer), requests, max_length(model))
    lengths = [len(row.tokens()) for row in rows]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    results: list[list[Scored | None]] = [[None] * len(conts) for _, conts in requests]
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start : start + batch_size]]
        for row, scores in zip(batch, _score_batch(model, batch)):
            for choice, score in zip(row.choices, scores):
                results[row.request][choice] = score
    complete = [[score for score in scores if score is not None] for scores in results]
    if any(len(done) != len(scores) for done, scores in zip(complete, results)):
        raise RuntimeError("a continuation was not scored")
    return complete


def token_logprobs(
    model: LoadedModel, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8
) -> list[list[float]]:
    """For each ``(tokens, n)``: the log-probability (computed in float32) of each of the last
    ``n`` tokens given every token before it, in one plain causal pass over ``tokens``."""
    torch = require("torch")
    for tokens, n in sequences:
        if not 1 <= n < len(tokens):
            raise ValueError(f"cannot score the last {n} of {len(tokens)} tokens")
    model.model.eval()
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    results: list[list[float]] = [[] for _ in sequences]
    for start in range(0, len(order), batch_size):
        batch = [sequences[i] for i in order[start : start + batch_size]]
        keep = max(n for _, n in batch)
        logits = _suffix_logits(model, [_Layout.causal(tokens[:-1]) for tokens, _ in batch], keep)
        with torch.inference_mode():
            for b, (i, (tokens, n)) in enumerate(zip(order[start : start + batch_size], batch)):
                row = logits[b, keep - n :, :].float()
                target = torch.tensor(list(tokens[-n:]), device=row.device)
                picked = row.gather(-1, target[:, None])[:, 0] - row.logsumexp(dim=-1)
                results[i] = picked.tolist()
    return results
