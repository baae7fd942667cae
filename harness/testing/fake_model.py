"""A tiny fake model for plugin authors' tests: deterministic, no weights to download.

It is a real transformers causal LM (a 2-layer Llama with hidden size 32, randomly initialised
from a fixed seed) with a byte-level tokenizer built in memory and a one-line chat template, so
that every model facility the harness offers (``harness.lib.generate``, lm-evaluation-harness,
training loops) works on it in well under a second.  Its answers are nonsense but the same on
every machine and every run, which is what a test of a benchmark or a trainer needs.

``FakeBackend`` (component name ``fake``) loads it: a folder holding saved weights (a trainer's
output) is loaded from disk, anything else gets the seeded model.  ``save_fake_model`` writes it
as an ordinary model folder that the ``hf`` backend loads too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.errors import require
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.refs import ComponentConfig
from harness.plugin.components import Backend

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ("<pad>", "<s>", "</s>")


def fake_tokenizer() -> Any:
    """A byte-level tokenizer (every text is encodable; 256 bytes + pad, BOS, EOS) with a chat template."""
    tokenizers = require("tokenizers")
    transformers = require("transformers")
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate([*SPECIALS, *sorted(alphabet)])}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def fake_transformer(vocab_size: int, seed: int = 0) -> Any:
    """The seeded 2-layer Llama (about 27k parameters) in float32."""
    torch = require("torch")
    transformers = require("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    return transformers.LlamaForCausalLM(config).float()


def fake_model(seed: int = 0, label: str = "fake") -> LoadedModel:
    """The fake model in memory, ready for a benchmark's ``evaluate`` or a trainer's ``train``."""
    tokenizer = fake_tokenizer()
    model = fake_transformer(len(tokenizer), seed).eval()
    ref = ModelRef(label, Path(f"fake-model-seed-{seed}"), "fake", "float32", None, f"fake-{seed}")
    return _with_api(LoadedModel(ref=ref, model=model, tokenizer=tokenizer, dtype="float32"))



def _with_api(loaded: LoadedModel) -> LoadedModel:
    """The fake model behind the same model API as the ``hf`` backend's (it is a transformers
    model), so benchmarks score it exactly as they score a real one."""
    from harness.lib.hf.model import HFModel

    loaded.api = HFModel(loaded)
    return loaded


def save_fake_model(folder: Path, seed: int = 0) -> Path:
    """Write the fake model as an ordinary model folder (safetensors, tokenizer, chat template)."""
    loaded = fake_model(seed)
    folder.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(str(folder))
    loaded.tokenizer.save_pretrained(str(folder))
    return folder


class FakeBackendConfig(ComponentConfig):
    seed: int = Field(0, description="seed of the random weights when the folder holds none")


class FakeBackend(Backend):
    """Loads the fake model: saved weights from the folder when it has them, else the seeded model."""

    name = "fake"
    description = "deterministic tiny model for tests (no weights to download)"
    Config = FakeBackendConfig

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        cfg = FakeBackendConfig.model_validate(self.config.model_dump())
        if (ref.path / "model.safetensors").is_file():
            transformers = require("transformers")
            model = transformers.AutoModelForCausalLM.from_pretrained(str(ref.path))
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(ref.path))
        else:
            tokenizer = fake_tokenizer()
            model = fake_transformer(len(tokenizer), cfg.seed)
        model.train(trainable)
        return _with_api(LoadedModel(ref=ref, model=model, tokenizer=tokenizer, dtype="float32"))


@harness.hookimpl
def harness_register_backends(registrar: Any) -> None:
    registrar.add(FakeBackend)
