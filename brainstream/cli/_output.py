"""Shared output helpers for verbs: ``--json`` prints exactly one JSON object, last."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (NaN/Inf become null so any JSON parser reads it)."""
    sys.stdout.write(json.dumps(_finite(obj), default=_default) + "\n")
    sys.stdout.flush()


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object last")
