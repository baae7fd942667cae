"""What a component's code is: its distribution and version and, for code that is not a fixed
release (an editable or local install, a source checkout), a digest of its source files.

Cached results are keyed by this identity, so fixing a bug in a scorer serves fresh scores
instead of the old cached ones.  A release installed from a wheel is identified by its version
alone (its code cannot change without a new version); anything installed in place, or imported
from a folder on ``sys.path``, is identified by the sha256 of every ``.py`` file of its top-level
package as well.  The built-in plugins use the harness's own machinery (``harness.lib``), so
their digest covers both ``harness`` and ``harness_plugins``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import sys
import sysconfig
from functools import cache
from pathlib import Path
from typing import Any

from harness import __version__

BUILTIN_PACKAGES = ("harness", "harness_plugins")
BUILTIN_DISTRIBUTION = f"finetune-harness {__version__}"
"""How the built-in plugins' distribution is named in messages and cache keys."""


def _installed_release(dist: importlib.metadata.Distribution, package_dir: Path) -> bool:
    """Whether ``package_dir`` is a fixed release: installed into site-packages, not in place."""
    direct = dist.read_text("direct_url.json")
    if direct:
        info = json.loads(direct)
        if info.get("dir_info", {}).get("editable") or str(info.get("url", "")).startswith("file:"):
            return False
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    return any(parent in site for parent in package_dir.resolve().parents)


def _package_dir(top: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # a module without a spec (built on the fly)
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def source_digest(folders: tuple[Path, ...]) -> str:
    """sha256 over the relative path and content of every ``.py`` file under ``folders``."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(f"{folder.name}/{path.relative_to(folder)}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


@cache
def code_identity(module: str) -> dict[str, Any]:
    """``{"distribution", "version", "source"}`` of the package that defines ``module``;
    ``source`` is a digest of its files, or ``None`` for a release installed from a wheel."""
    top = module.split(".", 1)[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    dist = importlib.metadata.distribution(names[0]) if names else None
    if top == "__main__":  # a plugin defined in the script being run: that file is its source
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        digest = hashlib.sha256(Path(main_file).read_bytes()).hexdigest() if main_file else None
        return {"distribution": None, "version": None, "source": digest}
    tops = BUILTIN_PACKAGES if top in BUILTIN_PACKAGES else (top,)
    folders = tuple(d for d in (_package_dir(t) for t in tops) if d is not None)
    fixed = dist is not None and bool(folders) and all(_installed_release(dist, f) for f in folders)
    return {
        "distribution": dist.metadata["Name"] if dist is not None else None,
        "version": dist.version if dist is not None else None,
        "source": None if fixed else source_digest(folders),
    }
