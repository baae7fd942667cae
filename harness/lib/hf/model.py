"""The ``hf`` backend's :class:`~harness.lib.model_api.ModelAPI`: today's transformers scoring
(``hf_scoring``) and generation (``hf_generate``) behind the common model API, unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import require
from harness.lib.model_api import (
    Capabilities,
    ChoiceRequest,
    GenerationConfig,
    ModelAPI,
    Scored,
    TokenizerFacts,
)
from harness.lib.models import LoadedModel

from harness.lib.hf import generate as hf_generate, scoring as hf_scoring


class HFModel(ModelAPI):
    """A transformers model and tokenizer in this process."""

    capabilities = Capabilities(loglikelihood=True, generate=True, chat=True)

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def choice_loglikelihoods(self, requests: Sequence[ChoiceRequest], batch_size: int = 8) -> list[list[Scored]]:
        return hf_scoring.choice_logprobs(self.loaded, requests, batch_size=batch_size)

    def token_logprobs(self, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8) -> list[list[float]]:
        return hf_scoring.token_logprobs(self.loaded, sequences, batch_size=batch_size)

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        return hf_generate.generate(self.loaded, prompts, config)

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        ))

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        prefix = self.tokenizer.bos_token_id
        prefix = prefix if prefix is not None else self.tokenizer.eos_token_id
        return [prefix, *ids] if add_bos and prefix is not None else ids

    def lm_eval_model(self, batch_size: int) -> Any:
        """lm-eval's own ``HFLM`` around the in-memory model (its batching and padding)."""
        huggingface = require("lm_eval.models.huggingface")
        model = self.loaded.model
        return huggingface.HFLM(
            pretrained=model, tokenizer=self.tokenizer, batch_size=batch_size, device=str(model.device)
        )

    def tokenizer_facts(self) -> TokenizerFacts:
        return TokenizerFacts(
            max_length=hf_scoring.max_length(self.loaded),
            bos_token=self.tokenizer.bos_token,
            eos_token=self.tokenizer.eos_token,
        )
