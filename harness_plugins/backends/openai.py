"""The ``openai`` and ``vllm_server`` backends: a model behind an OpenAI-compatible server.

``openai`` talks to any running endpoint (vLLM, llama.cpp server, TGI, a hosted API); the API key
comes from the environment variable the config names, never from the suite.  Its cache identity
is the endpoint's URL, the model ids it serves and a fixed log-probability probe, so a silently
swapped deployment misses the cache.  ``vllm_server`` starts the CPU vLLM server (the venv in
``$HARNESS_VLLM_VENV``) on the suite's model, serves the adapter with ``--enable-lora`` (or a
merged folder where LoRA serving fails) and then behaves exactly like ``openai``.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.errors import ConfigError, require
from harness.lib.endpoint import EndpointClient
from harness.lib.model_api import Capabilities
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.pipeline_spec import EndpointSpec
from harness.plugin.registry import Registrar
from harness.plugin.components import Backend, ComponentConfig

from harness_plugins.backends.endpoint_model import EndpointModel


class OpenAIConfig(ComponentConfig):
    url: str = Field(description="base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    served_model: str = Field(description="the model name requests use")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    prompt_logprobs: bool = Field(True, description="the server returns prompt log-probabilities (echo)")
    max_length: int = Field(2048, ge=16, description="the server's context length in tokens")
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)


def _tokenizer(ref: ModelRef) -> Any:
    """The local tokenizer of the suite's model (prompts are sent as token ids)."""
    return require("transformers").AutoTokenizer.from_pretrained(str(ref.path))


class OpenAIBackend(Backend[OpenAIConfig]):
    name = "openai"
    description = "any OpenAI-compatible endpoint: completions with prompt log-probs, chat for conversations"
    Config = OpenAIConfig
    capabilities = Capabilities(loglikelihood=True, generate=True, chat=True)

    def __init__(self, config: OpenAIConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        cfg = self.config
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            raise ConfigError(f"backend 'openai': environment variable {cfg.api_key_env} (the API key) is not set")
        if not cfg.prompt_logprobs:
            self.capabilities = Capabilities(loglikelihood=False)

    def spec(self) -> EndpointSpec:
        cfg = self.config
        return EndpointSpec(
            url=cfg.url, model=cfg.served_model, api_key_env=cfg.api_key_env,
            timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, concurrency=cfg.concurrency,
        )  # fmt: skip

    def model_for(self, ref: ModelRef) -> EndpointModel:
        cfg = self.config
        # One token of room: an echo request generates one token after the prompt.
        return EndpointModel(EndpointClient(self.spec()), _tokenizer(ref), cfg.max_length - 1, logprobs=cfg.prompt_logprobs)

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        if trainable:
            raise ConfigError(f"backend {self.name!r} serves models; it cannot train one")
        api = self.model_for(ref)
        return LoadedModel(ref=ref, model=None, tokenizer=api.tokenizer, dtype=ref.dtype, api=api)

    def cache_material_for(self, ref: ModelRef) -> dict[str, Any]:
        """Backend and config, plus the endpoint's identity: served ids and the probe."""
        return {**self.cache_material(), **self._identity(ref)}

    def _identity(self, ref: ModelRef) -> dict[str, Any]:
        if not hasattr(self, "_identity_memo"):
            api = self.model_for(ref)
            probe = api.probe() if self.capabilities.loglikelihood else None
            self._identity_memo = {"served_models": api.client.served_models(), "probe": probe}
        return self._identity_memo


class VllmServerConfig(ComponentConfig):
    max_model_len: int = Field(2048, ge=64)
    dtype: str = Field("float32", description="the server's weights dtype")
    concurrency: int = Field(4, ge=1)
    startup_timeout_s: float = Field(600, gt=0)


class VllmServerBackend(Backend[VllmServerConfig]):
    reads_model_folder = True
    name = "vllm_server"
    description = "starts the CPU vLLM OpenAI server on the model (adapters through --enable-lora), then as 'openai'"
    Config = VllmServerConfig
    capabilities = Capabilities(loglikelihood=True, generate=True, chat=True)

    def cache_material_for(self, ref: ModelRef) -> dict[str, Any]:
        """The weights are local (their fingerprint is in the key); the server's build is here."""
        return {**self.cache_material(), "vllm": _vllm_version()}

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        if trainable:
            raise ConfigError(f"backend {self.name!r} serves models; it cannot train one")
        cfg = self.config
        server, served = _start_server(ref, cfg, self.ctx.work_dir)
        spec = EndpointSpec(url=server.url, model=served, timeout_s=600, concurrency=cfg.concurrency)
        api = EndpointModel(EndpointClient(spec), _tokenizer(ref), cfg.max_model_len - 1)
        api.server = server  # kept alive with the model, stopped by its close()
        return LoadedModel(ref=ref, model=None, tokenizer=api.tokenizer, dtype=cfg.dtype, api=api)


def _venv() -> Path:
    """The server venv: ``$HARNESS_VLLM_VENV``, else ``.venv-vllm`` in the checkout."""
    from harness.lib.serving import venv_dir

    return venv_dir()


def _vllm_version() -> str:
    """The vLLM build the server venv holds (its dist-info folder name), or 'missing'."""
    found = sorted(_venv().glob("lib/python*/site-packages/vllm*.dist-info"))
    return found[0].name if found else "missing"


def _start_server(ref: ModelRef, cfg: VllmServerConfig, work_dir: Path) -> tuple[Any, str]:
    """Start the server (LoRA adapter served as its own model id); stopped at exit."""
    from harness.lib.serving import VllmServer, venv_python

    extra: list[str] = []
    served = "base"
    if ref.adapter is not None:
        served = "adapter"
        extra = ["--enable-lora", "--lora-modules", f"adapter={ref.adapter}", "--max-lora-rank", "64"]
    server = VllmServer(
        ref.path, served_name="base", dtype=cfg.dtype, extra_args=extra, log_path=Path(work_dir) / "vllm_server.log",
        startup_timeout_s=cfg.startup_timeout_s, python=venv_python(_venv()), max_model_len=cfg.max_model_len,
    )  # fmt: skip
    server.start()
    atexit.register(server.stop)
    return server, served


@harness.hookimpl
def harness_register_backends(registrar: Registrar) -> None:
    registrar.add(OpenAIBackend)
    registrar.add(VllmServerBackend)
