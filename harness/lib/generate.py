"""In-process generation and teacher-forced scoring from token ids, with server-style parameters.

Parity renders prompts itself (template, BOS, truncation), so generation here starts from token
ids, never from text that a tokenizer could re-tokenize differently.  Parameters use the OpenAI
request names (``temperature``, ``top_p``, ``top_k`` with -1 for off, ``max_tokens``, ``stop``,
``repetition_penalty``); temperature 0 is greedy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import require

if TYPE_CHECKING:
    from harness.lib.models import LoadedModel


@dataclass(frozen=True)
class Generation:
    """One completion of a rendered prompt: its text and its token ids."""

    text: str
    token_ids: tuple[int, ...]


def _left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    torch = require("torch")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def generate_ids(
    model: LoadedModel,
    prompts: Sequence[Sequence[int]],
    params: dict[str, Any],
    samples: int = 1,
    seed: int = 0,
) -> list[list[Generation]]:
    """``samples`` completions for each prompt (one batch; the caller chunks)."""
    torch = require("torch")
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = _left_pad(prompts, pad)
    ids, mask = ids.to(model.model.device), mask.to(model.model.device)
    temperature = float(params.get("temperature") or 0.0)
    kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1}
    if temperature > 0:
        top_k = int(params.get("top_k") or -1)
        kwargs = {
            "do_sample": True,
            "temperature": temperature,
            "top_p": float(params.get("top_p") or 1.0),
            "top_k": top_k if top_k > 0 else None,
            "num_return_sequences": samples,
        }
        torch.manual_seed(seed if params.get("seed") is None else int(params["seed"]))
    penalty = float(params.get("repetition_penalty") or 1.0)
    if penalty != 1.0:
        kwargs["repetition_penalty"] = penalty
    with torch.inference_mode():
        out = model.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=int(params.get("max_tokens") or 256),
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            **kwargs,
        )
    new = out[:, ids.shape[1] :].tolist()
    per_prompt = samples if temperature > 0 else 1
    stop = [s for s in (params.get("stop") or []) if s]
    results: list[list[Generation]] = []
    for p in range(len(prompts)):
        rows = [_finish(tok, new[p * per_prompt + s], stop) for s in range(per_prompt)]
        if per_prompt == 1 and samples > 1:  # greedy: every sample is the same
            rows = rows * samples
        results.append([Generation(text, tuple(token_ids)) for text, token_ids in rows])
    return results


def _finish(tok: Any, token_ids: list[int], stop: Sequence[str]) -> tuple[str, list[int]]:
    """Cut at EOS (or padding) and at the first stop string, as a server would."""
    end_ids = {tok.eos_token_id, tok.pad_token_id} - {None}
    for i, t in enumerate(token_ids):
        if t in end_ids:
            token_ids = token_ids[:i]
            break
    text = tok.decode(token_ids, skip_special_tokens=True)
    positions = [text.find(s) for s in stop if s in text]
    if positions:
        text = text[: min(positions)]
        while token_ids and len(tok.decode(token_ids, skip_special_tokens=True)) > len(text):
            token_ids = token_ids[:-1]
    return text, token_ids


def score_continuations(
    model: LoadedModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]
) -> list[tuple[list[float], list[int], list[float]]]:
    """Teacher-forced: for each ``(prompt ids, continuation ids)``, the log-probability of each
    continuation token, the model's own top token at each position, and that token's
    log-probability (computed in float32)."""
    torch = require("torch")
    results: list[Any] = []
    model.model.eval()
    for prompt, cont in pairs:
        if not cont:
            results.append(([], [], []))
            continue
        seq = torch.tensor([list(prompt) + list(cont)], device=model.model.device)
        with torch.inference_mode():
            logits = model.model(input_ids=seq).logits[0, len(prompt) - 1 : -1].float()
        logp = logits.log_softmax(-1)
        target = torch.tensor(list(cont), device=logp.device)
        picked = logp.gather(-1, target[:, None])[:, 0]
        top_lp, top_id = logp.max(-1)
        results.append((picked.tolist(), top_id.tolist(), top_lp.tolist()))
    return results
