"""The ``hf`` backend: transformers in-process, on the CPU (or a GPU when one is present).

bfloat16 is used for ``dtype: auto`` only where the hardware runs it natively (a GPU, or a CPU with
AVX512-BF16 or AMX); elsewhere bf16 matmuls are emulated and slower than float32.  An adapter is
loaded with peft and merged for evaluation speed.
"""

from __future__ import annotations

from typing import Any

import harness
from harness.plugin.components import Backend, ComponentConfig
from harness.errors import require
from harness.lib.device import device, resolve_dtype
from harness.lib.models import LoadedModel, ModelRef
from harness.plugin.registry import Registrar

from harness.lib.hf.model import HFModel


class HFBackend(Backend[ComponentConfig]):
    reads_model_folder = True
    name = "hf"
    description = "transformers in-process (CPU, or GPU when present); adapters through peft"
    Config = ComponentConfig

    def cache_material_for(self, ref: ModelRef) -> dict[str, Any]:
        return {**self.cache_material(), "dtype": resolve_dtype(ref.dtype), "device": device()}

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        torch = require("torch")
        transformers = require("transformers")
        transformers.utils.logging.disable_progress_bar()  # the runner shows its own progress
        transformers.utils.logging.set_verbosity_error()
        # Training keeps float32 master weights (autocast does the bf16 part); evaluation uses
        # the suite's dtype.
        dtype = "float32" if trainable else resolve_dtype(ref.dtype)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(ref.path))
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(ref.path), dtype=getattr(torch, dtype)
        )
        if ref.adapter is not None:
            peft = require("peft")
            model = peft.PeftModel.from_pretrained(model, str(ref.adapter)).merge_and_unload()
        model.to(device())
        model.train(trainable)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = LoadedModel(ref=ref, model=model, tokenizer=tokenizer, dtype=dtype)
        loaded.api = HFModel(loaded)
        return loaded


@harness.hookimpl
def harness_register_backends(registrar: Registrar) -> None:
    registrar.add(HFBackend)
