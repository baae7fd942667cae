"""Text facts of a model served from a transformers tokenizer loaded beside it (vLLM in-process,
an OpenAI-compatible server): chat rendering, token ids and context length, computed here exactly as
the ``hf`` backend computes them, so prompts and log-likelihood requests match across backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.lib.hf.scoring import _Encoder
from harness.lib.model_api import TokenizerFacts


class TokenizerText:
    """Mixin for a ``ModelAPI`` with ``tokenizer``, ``max_length`` and ``_encoder`` attributes."""

    tokenizer: Any
    max_length: int
    _encoder: _Encoder

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt))

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return [self._encoder.prefix_id, *ids] if add_bos else ids

    def tokenizer_facts(self) -> TokenizerFacts:
        return TokenizerFacts(self.max_length, self.tokenizer.bos_token, self.tokenizer.eos_token)
