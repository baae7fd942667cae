"""Checks that can run before any work: the run's preflight (and ``harness validate``).

Each check is a function of plain values (paths, strings, the environment) that returns a list of
``Problem``s instead of raising, so a caller can run all of them and report every problem at once.
A ``Problem``'s ``where`` is the suite's ``file:line`` that the value came from (the caller knows
it; ``LoadedSuite.where(loc)``), and its ``message`` is one line that says what is wrong and how to
fix it.  ``severity`` is ``error`` (the run must not start) or ``warning`` (it may, and says so).

Nothing here changes anything on disk, except ``check_writable_dir``, which proves a folder
writable by creating and removing one empty temporary file in it.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.lib.data import DATA_ENV

ENCODING_PROBE_BYTES = 4 << 20
"""How much of a data file is decoded to check its encoding (the start is where it shows)."""


@dataclass(frozen=True)
class Problem:
    where: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def errors(problems: list[Problem]) -> list[Problem]:
    """The problems that stop a run."""
    return [p for p in problems if p.severity == "error"]


# ---------------------------------------------------------------------------------- data


def _stat(path: Path) -> tuple[os.stat_result | None, str]:
    """``os.stat`` of ``path`` following links, or ``(None, why not)``."""
    try:
        return path.stat(), ""
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "is a symbolic link loop"
        if exc.errno == errno.ENOENT:
            return None, "is a broken symbolic link" if path.is_symlink() else "does not exist"
        if exc.errno == errno.EACCES:
            return None, "cannot be reached (permission denied)"
        return None, f"cannot be read ({exc.strerror})"


def check_data_path(
    path: Path,
    encoding: str | None = "utf-8",
    *,
    where: str,
    kind: Literal["file", "folder"] = "file",
    raw: str = "",
) -> list[Problem]:
    """A data file (or a folder, for readers that read one) that exists, is readable, is not
    empty and, for a file, decodes with ``encoding`` (``None``: binary, not checked).

    ``raw`` is the path as written in the suite; when it starts with ``${data}`` a missing file
    hints at ``HARNESS_DATA_DIR``."""
    info, why = _stat(path)
    if info is None:
        hint = f" (under ${{data}}: is {DATA_ENV} the folder holding the data sets?)" if raw.startswith("${data}") and "exist" in why else ""
        return [Problem(where, f"data {kind} {path} {why}{hint}")]
    if kind == "folder":
        if not stat.S_ISDIR(info.st_mode):
            return [Problem(where, f"data folder {path} is not a folder")]
        if not os.access(path, os.R_OK | os.X_OK):
            return [Problem(where, f"data folder {path} cannot be read (permission denied)")]
        if not any(path.iterdir()):
            return [Problem(where, f"data folder {path} is empty")]
        return []
    if stat.S_ISDIR(info.st_mode):
        return [Problem(where, f"data file {path} is a folder, not a file")]
    if not stat.S_ISREG(info.st_mode):
        return [Problem(where, f"data file {path} is not a regular file (a device, pipe or socket)")]
    try:
        with path.open("rb") as fh:
            head = fh.read(ENCODING_PROBE_BYTES)
    except OSError as exc:
        return [Problem(where, f"data file {path} cannot be read ({exc.strerror})")]
    if not head.strip():
        return [Problem(where, f"data file {path} is empty")]
    if encoding is None:
        return []
    return _check_encoding(path, head, encoding, where)


def _check_encoding(path: Path, head: bytes, encoding: str, where: str) -> list[Problem]:
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        return [Problem(where, f"unknown encoding {encoding!r} for {path}")]
    try:
        decoder.decode(head, final=False)  # a character cut at the probe's end is not an error
    except UnicodeDecodeError as exc:
        line = head[: exc.start].count(b"\n") + 1
        byte = head[exc.start : exc.start + 1].hex()
        return [
            Problem(
                where,
                f"data file {path}:{line} is not {encoding} text (byte 0x{byte}); "
                "convert it to UTF-8, or declare its encoding if the reader takes one (e.g. encoding: latin-1)",
            )
        ]
    return []


def check_sample_size(sample: int | str | None, available: int, *, where: str, path: str, split: str = "all") -> list[Problem]:
    """A data source's ``sample`` against the records there are (after its split): more than
    there are is an error (``sample: all`` says "every record" on purpose)."""
    if sample is None or sample == "all" or not isinstance(sample, int) or sample <= available:
        return []
    scope = f" in the {split} split" if split != "all" else ""
    return [
        Problem(
            where,
            f"sample: {sample} but {path} has only {available} record{'s' if available != 1 else ''}{scope}; "
            "lower it, or write 'sample: all' to keep every record",
        )
    ]


def check_data_dir(value: str | None, *, where: str) -> list[Problem]:
    """``HARNESS_DATA_DIR`` as a suite that names ``${data}/...`` paths needs it: set to an
    existing folder (``value`` is the variable's value; ``None`` when unset)."""
    if value is None or not value.strip():
        return [Problem(where, f"the suite reads ${{data}}/... but {DATA_ENV} is not set; set it to the folder holding the data sets")]
    path = Path(value)
    info, why = _stat(path)
    if info is None:
        return [Problem(where, f"{DATA_ENV}={value} {why}; set it to the folder holding the data sets")]
    if not stat.S_ISDIR(info.st_mode):
        return [Problem(where, f"{DATA_ENV}={value} is not a folder; set it to the folder holding the data sets")]
    return []


# --------------------------------------------------------------------------------- model


def check_model_reference(source: str, base_dir: Path, *, where: str, embedded: Mapping[str, str] | None = None) -> list[Problem]:
    """A suite's ``model``: an embedded model whose package is installed (``embedded`` maps its
    name to the package), or a local folder with ``config.json`` and weights.  Hub ids are not
    fetched (a run needs no network), so one that is not a folder here is a problem too."""
    import importlib.util

    if embedded is None:
        from harness.lib.models import EMBEDDED

        embedded = {name: model.package for name, model in EMBEDDED.items()}
    if source in embedded:
        if importlib.util.find_spec(embedded[source]) is None:
            return [Problem(where, f"the embedded model {source!r} needs its package {embedded[source]!r}, which is not installed")]
        return []
    path = Path(source)
    path = path if path.is_absolute() else base_dir / path
    info, why = _stat(path)
    if info is None:
        known = ", ".join(sorted(embedded)) or "none"
        return [Problem(where, f"model {source!r}: {path} {why}; use a model folder with config.json or an embedded model ({known})")]
    if not stat.S_ISDIR(info.st_mode):
        return [Problem(where, f"model {source!r}: {path} is not a folder")]
    if not (path / "config.json").is_file():
        return [Problem(where, f"model {source!r}: {path} has no config.json")]
    if not any(path.glob("*.safetensors")):
        return [Problem(where, f"model {source!r}: {path} has no *.safetensors weights")]
    return []


# ------------------------------------------------------------------------- environment


def check_writable_dir(path: Path, *, where: str, what: str) -> list[Problem]:
    """``path`` (``what``: "reports folder", "store folder") is a folder this process can write
    in, or can be created: the nearest existing ancestor is a writable folder.  Proven by creating
    and removing an empty temporary file, since permission bits do not show read-only mounts."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return [Problem(where, f"{what} {path}: {probe} is a file, not a folder")]
    try:
        fd, name = tempfile.mkstemp(prefix=".harness-write-probe-", dir=probe)
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc)).lower()
        return [Problem(where, f"{what} {path} is not writable ({reason}); choose a writable folder")]
    os.close(fd)
    os.unlink(name)
    return []


def check_env_var(name: str, *, where: str, purpose: str, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """Environment variable ``name`` (e.g. an endpoint's API key) is set and not empty."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return [Problem(where, f"{name} is not set ({purpose}); set it in the job's environment")]
    if not value.strip():
        return [Problem(where, f"{name} is set but empty ({purpose})")]
    return []


def check_store(root: Path, *, where: str) -> list[Problem]:
    """The store folder: writable, and its ``store.sqlite`` (if any) an SQLite file; a 0-byte one
    is a warning (it is taken as a new store, and any run history it had is gone)."""
    from harness.lib.store import DB_NAME, SQLITE_HEADER, read_header, repair_hint

    problems = check_writable_dir(root, where=where, what="store folder")
    db = root / DB_NAME
    try:
        head = read_header(db)  # never a plain open(): a run checks the store it holds open
    except FileNotFoundError:
        return problems
    except OSError as exc:
        return [*problems, Problem(where, f"{db} cannot be read ({exc.strerror})")]
    if not head:
        return [*problems, Problem(where, f"{db} is empty (0 bytes): it will be taken as a new store", "warning")]
    if head != SQLITE_HEADER:
        return [*problems, Problem(where, f"{db} is corrupted (not an SQLite database); {repair_hint(root.resolve())}")]
    return problems
