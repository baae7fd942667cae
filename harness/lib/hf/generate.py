"""Batched text generation with a transformers model: greedy or sampled, with stop strings.

Prompts are left-padded into batches; generation stops for the whole batch when every row has
produced a stop string (or the token budget is spent), and each completion is cut at its first
stop string.  Sampling is seeded per prompt and sample index, so results do not depend on the
batch a prompt landed in (up to floating-point effects of padding, which greedy decoding
makes negligible).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import require
from harness.lib.model_api import GenerationConfig, cut_at_stop
from harness.lib.models import LoadedModel

__all__ = ["GenerationConfig", "cut_at_stop", "generate"]


def generate(model: LoadedModel, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
    """One completion per prompt (``prompts`` may repeat a prompt to draw several samples)."""
    torch = require("torch")
    transformers = require("transformers")
    tokenizer = model.tokenizer
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    for start in range(0, len(prompts), config.batch_size):
        batch = list(prompts[start : start + config.batch_size])
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.model.device)
        stopping = _StopOnStrings(tokenizer, enc["input_ids"].shape[1], config.stop)
        kwargs: dict[str, Any] = {"do_sample": False}
        if config.temperature > 0:
            torch.manual_seed(config.seed + start)
            kwargs = {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
        with torch.inference_mode():
            out = model.model.generate(
                **enc,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=transformers.StoppingCriteriaList([stopping]),
                **kwargs,
            )
        for row in out[:, enc["input_ids"].shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            outputs.append(cut_at_stop(text, config.stop))
    return outputs


class _StopOnStrings:
    """Stops generation once every row's new text contains one of the stop strings."""

    def __init__(self, tokenizer: Any, prompt_len: int, stop: Sequence[str]) -> None:
        self.tokenizer, self.prompt_len, self.stop = tokenizer, prompt_len, tuple(stop)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        torch = require("torch")
        done = []
        for row in input_ids[:, self.prompt_len :]:
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            done.append(bool(self.stop) and any(s in text for s in self.stop))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
