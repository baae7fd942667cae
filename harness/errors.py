"""Errors the CLI turns into one line and an exit code.

Expected user problems (bad suite, missing data, unknown component, broken plugin) raise a
``HarnessError`` subclass.  The CLI prints ``str(error)`` on one line, without a traceback, and
exits with ``error.exit_code``.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CHECK_ERRORED = 3


class HarnessError(Exception):
    """Base class of every error meant for the user rather than for a traceback."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(HarnessError):
    """A suite or plugin configuration is invalid.  The message names ``file:line`` and the key."""


class DataError(HarnessError):
    """A data set is missing, empty, or unreadable.  The message names the file (and line)."""


class UnknownComponentError(ConfigError):
    """A suite names a component that no plugin registered; the message lists the known ones."""


class PluginError(HarnessError):
    """A plugin failed to load or misbehaved; the message names the plugin and its distribution."""


class MissingExtraError(HarnessError):
    """An optional dependency is missing; the message gives the exact ``pip install`` command."""


class StoreError(HarnessError):
    """The store cannot be used (corrupted, unreadable, read-only); the message names the file and
    the fix (``harness store repair``, a writable ``--store``)."""


class CheckError(HarnessError):
    """A check (training, evaluation) failed while running; gates depending on it are ``error``."""

    exit_code = EXIT_CHECK_ERRORED


def require(module: str, extra: str = "ml") -> Any:
    """Import ``module`` or raise ``MissingExtraError`` with the install hint for ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            f"{module} is not installed: pip install 'finetune-harness[{extra}]' ({exc})"
        ) from exc
