"""The ``vllm`` backend: ``vllm.LLM`` in this process (a GPU build of vLLM).

Log-likelihoods come from ``prompt_logprobs`` (the prompt sent as token ids from the model's
tokenizer, split into context and continuation as on ``hf``); generation from
``LLM.generate``; an adapter is served through ``LoRARequest``; prefix caching is on, and
``tensor_parallel_size`` spreads one model over several GPUs.  Only available where ``vllm`` is
importable; the CPU server build lives in its own venv and is the ``vllm_server`` backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

import harness
from harness.errors import ConfigError, require
from harness.lib.model_api import Capabilities, ChoiceRequest, GenerationConfig, ModelAPI, Scored, cut_at_stop
from harness.lib.models import LoadedModel, ModelRef
from harness.plugin.registry import Registrar
from harness.plugin.components import Backend, ComponentConfig

from harness.lib.hf.scoring import _Encoder
from harness.lib.hf.text import TokenizerText


class VllmConfig(ComponentConfig):
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int = Field(2048, ge=64)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_lora_rank: int = Field(64, ge=1)


class VllmModel(TokenizerText, ModelAPI):
    """A ``vllm.LLM`` with an optional LoRA adapter."""

    capabilities = Capabilities()

    def __init__(self, llm: Any, lora: Any, max_length: int) -> None:
        self.llm, self.lora, self.max_length = llm, lora, max_length
        self.tokenizer = llm.get_tokenizer()
        self._encoder = _Encoder(self.tokenizer)
        self._vllm = require("vllm")

    def _prompt_logprobs(self, prompts: Sequence[Sequence[int]]) -> list[Any]:
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1)
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        return [out.prompt_logprobs for out in self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)]

    def choice_loglikelihoods(self, requests: Sequence[ChoiceRequest], batch_size: int = 8) -> list[list[Scored]]:
        pairs = [self._encoder.pair(ctx, cont) for ctx, conts in requests for cont in conts]
        prompts = [(c + k)[-self.max_length :] for c, k in pairs]
        scored = []
        for (_, cont), tokens, logprobs in zip(pairs, prompts, self._prompt_logprobs(prompts)):
            span = range(len(tokens) - len(cont), len(tokens))
            entries = [logprobs[i][tokens[i]] for i in span]
            scored.append((sum(e.logprob for e in entries), all(e.rank == 1 for e in entries)))
        flat = iter(scored)
        return [[next(flat) for _ in conts] for _, conts in requests]

    def token_logprobs(self, sequences: Sequence[tuple[Sequence[int], int]], batch_size: int = 8) -> list[list[float]]:
        outs = self._prompt_logprobs([tokens for tokens, _ in sequences])
        return [
            [logprobs[i][tokens[i]].logprob for i in range(len(tokens) - n, len(tokens))]
            for (tokens, n), logprobs in zip(sequences, outs)
        ]

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[str]:
        params = [
            self._vllm.SamplingParams(
                max_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                seed=config.seed + i if config.temperature > 0 else None, stop=list(config.stop) or None,
            )
            for i in range(len(prompts))
        ]
        inputs = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        outs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        return [cut_at_stop(out.outputs[0].text, config.stop) for out in outs]



class VllmBackend(Backend[VllmConfig]):
    reads_model_folder = True
    name = "vllm"
    description = "vllm.LLM in-process (GPU): prompt log-probs, LoRA adapters, prefix caching, tensor parallel"
    Config = VllmConfig
    capabilities = Capabilities()

    def cache_material_for(self, ref: ModelRef) -> dict[str, Any]:
        return {**self.cache_material(), "dtype": ref.dtype, "vllm": require("vllm").__version__}

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        if trainable:
            raise ConfigError("backend 'vllm' serves models; it cannot train one")
        vllm = require("vllm")
        cfg = self.config
        dtype = "float32" if ref.dtype == "float32" else "auto"
        llm = vllm.LLM(
            model=str(ref.path), dtype=dtype, tensor_parallel_size=cfg.tensor_parallel_size,
            max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_prefix_caching=True, enable_lora=ref.adapter is not None, max_lora_rank=cfg.max_lora_rank,
        )  # fmt: skip
        lora = None
        if ref.adapter is not None:
            lora = require("vllm.lora.request").LoRARequest("adapter", 1, str(ref.adapter))
        api = VllmModel(llm, lora, cfg.max_model_len - 1)
        return LoadedModel(ref=ref, model=None, tokenizer=api.tokenizer, dtype=dtype, api=api)


@harness.hookimpl
def harness_register_backends(registrar: Registrar) -> None:
    registrar.add(VllmBackend)
