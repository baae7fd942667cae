"""Evaluation and regression harness for fine-tuned LLMs.

The core (this package) composes stages (curate, train, evaluate, gate, report) out of components
that plugins contribute through pluggy hooks.  It imports no heavy ML library at module level.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT_NAME = "harness"
"""The pluggy project name and the entry-point group that third-party plugins use."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations: ``@harness.hookimpl``."""

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
