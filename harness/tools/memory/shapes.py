"""Model shapes for the memory planner: the sizes a transformers config gives (layers, widths,
heads, vocabulary) and every ``nn.Linear`` the adapters and 4-bit quantization count, from a
model folder, a hub-style config, or a built-in preset of a well-known architecture."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from harness.errors import ConfigError, require

_LLAMA2 = {"model_type": "llama", "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False}
PRESETS: dict[str, dict[str, Any]] = {
    "llama-2-7b": {
        **_LLAMA2,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
    },
    "llama-2-13b": {
        **_LLAMA2,
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "intermediate_size": 13824,
    },
    "llama-2-70b": {
        **_LLAMA2,
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
    },
    "llama-3-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "rope_theta": 500000.0,
    },
}
"""Built-in architectures of well-known sizes, so the planner works offline."""

EMBEDDED_NAME = "smollm2-135m-instruct"




@dataclass(frozen=True)
class Linear:
    """One ``nn.Linear`` of the model: its qualified name and features."""

    name: str
    in_features: int
    out_features: int

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs from a model: exact parameter counts and the layer dimensions.

    Counted on an instance built on the meta device (no memory), so tied embeddings count once.
    """

    name: str
    params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    linears: tuple[Linear, ...] = ()
    """Every ``nn.Linear`` except the output head (what LoRA targets and bitsandbytes quantizes)."""
    largest_param: int = 0
    """Elements of the largest parameter tensor (the optimizer step's temporaries scale with it)."""
    layer_params: int = 0
    """Parameters of the largest decoder layer (what full sharding gathers at a time)."""
    adafactor_state_bytes: int = 0
    """Adafactor's factored state for all parameters (4*(rows+cols) a matrix, 4*numel a vector)."""

    @property
    def quantizable_params(self) -> int:
        return sum(lin.in_features * lin.out_features for lin in self.linears)

    def adapters(self, targets: Sequence[str]) -> tuple[Linear, ...]:
        """The Linear modules a LoRA with these target names adapts (matched on the leaf name)."""
        return tuple(lin for lin in self.linears if lin.leaf in targets or lin.name in targets)


def load_config(model: str | Path | Mapping[str, Any], base_dir: Path | None = None) -> tuple[str, Any]:
    """``(name, transformers config)`` of ``model``: a preset name, the embedded model's name, a
    Hugging Face model folder with config.json, a config.json path, or a config mapping (with
    ``model_type``).  Raises ``ConfigError`` naming what it could not read."""
    transformers = require("transformers")
    if isinstance(model, Mapping):
        kwargs = dict(model)
        model_type = kwargs.pop("model_type", "llama")
        return model_type, transformers.AutoConfig.for_model(model_type, **kwargs)
    text = str(model)
    if text in PRESETS:
        kwargs = dict(PRESETS[text])
        return text, transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    if text == EMBEDDED_NAME:
        from harness.lib.models import resolve_model

        path = resolve_model(EMBEDDED_NAME, "hf", "auto", base_dir or Path.cwd()).path / "config.json"
    else:
        path = Path(text)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_dir():
            path = path / "config.json"
            if not path.is_file():
                raise ConfigError(f"--model {text}: no config.json in that folder")
        elif not path.is_file():
            known = ", ".join([*PRESETS, EMBEDDED_NAME])
            raise ConfigError(
                f"--model {text!r}: not a preset or embedded model ({known}), a model folder or a config.json"
            )
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # a broken file: transformers raises OSError, ValueError, KeyError...
        raise ConfigError(f"{path}: not a readable transformers config ({type(exc).__name__}: {exc})") from exc
    return text, config


def load_shape(model: str | Path | Mapping[str, Any], base_dir: Path | None = None) -> ModelShape:
    """The ``ModelShape`` of ``model`` (see ``load_config``), counted on the meta device."""
    name, config = load_config(model, base_dir)
    return shape_from_config(config, name)


def shape_from_config(config: Any, name: str) -> ModelShape:
    """Build the model on the meta device (``AutoModelForCausalLM.from_config``) and count it."""
    torch = require("torch")
    transformers = require("transformers")
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--model {name}: transformers cannot build a causal LM from it ({exc})") from exc
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = 0
    per_layer: dict[str, int] = {}
    adafactor = 0
    largest = 0
    for pname, p in model.named_parameters():  # unique parameters: a tied head counts once
        params += p.numel()
        largest = max(largest, p.numel())
        match = re.search(r"\.layers?\.(\d+)\.", f".{pname}")
        if match:
            per_layer[match.group(1)] = per_layer.get(match.group(1), 0) + p.numel()
        adafactor += 4 * (math.prod(p.shape[:-1]) + p.shape[-1] if p.dim() >= 2 else p.numel())
    head = model.get_output_embeddings()
    linears = tuple(
        Linear(mname, mod.in_features, mod.out_features)
        for mname, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and mod is not head
    )
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return ModelShape(
        name=name,
        params=params,
        hidden=hidden,
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
        vocab=int(text.vocab_size),
        linears=linears,
        largest_param=largest,
        layer_params=max(per_layer.values(), default=0),
        adafactor_state_bytes=adafactor,
    )
