"""Pytest fixtures for the harness and for plugin authors (registered as the ``harness`` pytest
plugin through the ``pytest11`` entry point).

* ``plugin_manager`` / ``registries``: an isolated manager with the built-ins only.
* ``embedded_model_dir``: the embedded SmolLM2 converted to safetensors (cached across sessions).
* ``tiny_model_dir``: a randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat
  template, for fast unit tests of trainers and backends.
* ``write_suite``: writes a suite YAML into ``tmp_path`` and returns its path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def plugin_manager():
    from harness.plugins import get_plugin_manager

    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
def registries(plugin_manager):
    from harness.registry import Registries

    return Registries.from_plugin_manager(plugin_manager)


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from harness.models import EMBEDDED, materialize_embedded

    return materialize_embedded(EMBEDDED["smollm2-135m-instruct"])


def build_tiny_model(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """Save a tiny random Llama (hidden 64, 2 layers) with the tokenizer of ``tokenizer_dir``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(embedded_model_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    def write(data: dict[str, Any] | str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write
