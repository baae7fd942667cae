"""``advice.json``: the advice as a versioned JSON document that reads back into ``Advice``.

The dataclasses are (de)serialised by pydantic's ``TypeAdapter`` (one schema, no hand-written
field lists); an infinite break-even time (training never pays back) is written as the string
``"Infinity"`` so the file stays strict JSON.  ``summary`` and the per-arm format-failure rates
are added for readers and ignored when read back.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.errors import DataError
from harness.tools.advise.decide import Advice

ADVICE_SCHEMA = "finetune-harness/advice/v1"
_ADAPTER = TypeAdapter(Advice)


def _strict(value: Any) -> Any:
    """``value`` with non-finite floats as strings (``"Infinity"``), which pydantic reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


def advice_to_json(advice: Advice) -> dict[str, Any]:
    """The advice as a JSON-ready dict (strict JSON: no NaN or infinity literals)."""
    data: dict[str, Any] = _strict(_ADAPTER.dump_python(advice, mode="json"))
    for arm, measured in zip(data["measurements"]["arms"], advice.measurements.arms):
        arm["format_failure_rate"] = measured.format_failure_rate
    return {"schema": ADVICE_SCHEMA, "summary": advice.summary, **data}


def advice_from_json(data: dict[str, Any], where: str = "advice.json") -> Advice:
    """Read an ``advice_to_json`` document back (a one-line error naming ``where`` otherwise)."""
    if not isinstance(data, dict) or data.get("schema") != ADVICE_SCHEMA:
        raise DataError(f"{where}: not a {ADVICE_SCHEMA} document")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def write_advice(advice: Advice, path: Path) -> Path:
    """Write ``advice.json`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(advice_to_json(advice), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_advice(path: Path) -> Advice:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read advice ({exc})") from None
    return advice_from_json(data, str(path))
