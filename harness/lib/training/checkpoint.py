"""Resumable training state: atomic checkpoints with a checksum manifest.

A checkpoint is a folder ``step-00000012`` under the trainer's ``state`` folder.  It is written as
``tmp-step-00000012-<pid>`` on the same file system, every file and the folder are fsynced, a
``manifest.json`` with the sha256 of every file, the step and the digest of the training
configuration is written last, and only then is the folder renamed into place.  A folder without a
verifying manifest is therefore never a checkpoint: on resume the newest folder whose manifest
verifies is taken, and the others (half-written ``tmp-*`` folders, a corrupted file, a checkpoint
of another configuration) are moved to ``quarantine/`` with the reason, never deleted silently.

What a checkpoint holds is up to the trainer's engine (weights or adapter and optimizer state as
safetensors, the scheduler as JSON); this module adds the random number generator states of every
rank (Python, NumPy, torch CPU and CUDA) as JSON, so no file of a checkpoint is ever unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import DataError

MANIFEST = "manifest.json"
FORMAT = 1
_PREFIX = "step-"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    meta: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with file.open("rb+") as fh:
            os.fsync(fh.fileno())
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(folder)
    _fsync_dir(path)


def staging_dir(root: Path, step: int, token: str) -> Path:
    """The temporary folder a checkpoint of ``step`` is written into (``token`` keeps concurrent
    writers apart; every rank of a distributed job must use the same one)."""
    root.mkdir(parents=True, exist_ok=True)
    return root / f"tmp-{_PREFIX}{step:08d}-{token}"


def commit(staging: Path, step: int, meta: dict[str, Any], keep: int = 2) -> Path:
    """Seal a fully written staging folder: fsync, manifest, rename; keep the ``keep`` newest."""
    root = staging.parent
    _fsync_tree(staging)
    files = {
        str(p.relative_to(staging)): _sha256(p)
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": FORMAT, "step": step, "files": files, "meta": meta}
    target = staging / MANIFEST
    with target.open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(staging)
    final = root / f"{_PREFIX}{step:08d}"
    if final.exists():  # the same step written again (a resumed run saving where it resumed)
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(root)
    complete = sorted(p for p in root.glob(f"{_PREFIX}*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save(root: Path, step: int, write: Callable[[Path], None], meta: dict[str, Any], keep: int = 2) -> Path:
    """Write a checkpoint with ``write(folder)`` and seal it (one process)."""
    staging = staging_dir(root, step, str(os.getpid()))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write(staging)
    return commit(staging, step, meta, keep)


def verify(path: Path, config_digest: str | None = None) -> tuple[Checkpoint | None, str]:
    """The checkpoint in ``path`` if its manifest verifies, else ``(None, reason)``."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "no readable manifest (an interrupted save)"
    if manifest.get("format") != FORMAT:
        return None, f"manifest format {manifest.get('format')!r} is not {FORMAT}"
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != MANIFEST}
    if present != set(manifest["files"]):
        return None, "its files differ from the manifest's"
    for name, digest in manifest["files"].items():
        if _sha256(path / name) != digest:
            return None, f"{name} does not match its sha256"
    meta = manifest.get("meta", {})
    if config_digest is not None and meta.get("config_digest") != config_digest:
        return None, "it was written by another training configuration"
    return Checkpoint(path, int(manifest["step"]), meta), ""


def latest(root: Path, config_digest: str | None = None) -> Checkpoint | None:
    """The newest verifying checkpoint under ``root``; everything else there that is not a
    checkpoint (half-written, corrupted, foreign) is moved to ``root/quarantine`` with a reason."""
    if not root.is_dir():
        return None
    found: Checkpoint | None = None
    for path in sorted(root.iterdir(), reverse=True):
        if path.name == "quarantine" or not path.is_dir():
            continue
        if path.name.startswith(_PREFIX) and found is None:
            checkpoint, reason = verify(path, config_digest)
            if checkpoint is not None:
                found = checkpoint
                continue
        elif path.name.startswith(_PREFIX):
            continue  # an older complete checkpoint: kept for pruning by the next commit
        else:
            reason = "an interrupted save (never committed)"
        _quarantine(root, path, reason)
    return found


def _quarantine(root: Path, path: Path, reason: str) -> None:
    target = root / "quarantine" / path.name
    target.parent.mkdir(exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(path, target)
    (target.parent / f"{path.name}.reason.txt").write_text(reason + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- RNG states


def rng_state(torch: Any) -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states, as JSON values."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss]}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch
        pass
    else:
        legacy: Any = np.random.get_state()  # (kind, keys, pos, has_gauss, cached)
        kind, keys, pos, has_gauss, cached = legacy
        state["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    state["torch"] = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
    if torch.cuda.is_available():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()
        ]
    return state


def set_rng_state(torch: Any, state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))

    def tensor(text: str) -> Any:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


def save_rng(folder: Path, rank: int, torch: Any) -> None:
    (folder / f"rng_rank{rank}.json").write_text(json.dumps(rng_state(torch)), encoding="utf-8")


def load_rng(folder: Path, rank: int, torch: Any) -> None:
    path = folder / f"rng_rank{rank}.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot restore the random state of rank {rank}: {exc}") from None
    set_rng_state(torch, state)


# ----------------------------------------------------------------------------- optimizer state


def save_optimizer(folder: Path, state_dict: dict[str, Any]) -> None:
    """An optimizer ``state_dict`` as ``optimizer.safetensors`` (tensors) plus
    ``optimizer.json`` (param groups, non-tensor values), never pickled."""
    from safetensors.torch import save_file

    tensors, scalars = {}, {}
    for key, values in state_dict["state"].items():
        tag = f"{type(key).__name__}:{key}"
        for name, value in values.items():
            if hasattr(value, "detach"):
                tensors[f"{tag}/{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{tag}/{name}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(
        json.dumps({"param_groups": state_dict["param_groups"], "scalars": scalars}), encoding="utf-8"
    )


def load_optimizer(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    extra = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    state: dict[Any, dict[str, Any]] = {}

    def slot(tag: str) -> dict[str, Any]:
        kind, _, key = tag.partition(":")
        return state.setdefault(int(key) if kind == "int" else key, {})

    for full, value in load_file(str(folder / "optimizer.safetensors")).items():
        tag, _, name = full.rpartition("/")
        slot(tag)[name] = value
    for full, value in extra["scalars"].items():
        tag, _, name = full.rpartition("/")
        slot(tag)[name] = value
    return {"state": state, "param_groups": extra["param_groups"]}


def config_digest(material: Any) -> str:
    """Digest of what makes two trainings the same (config, data, seed, base model)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
