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


# seconds between progress-bar updates when stderr is a log file or a pipe rather than a terminal
LOG_PROGRESS_INTERVAL_S = 15.0


def progress_bar(**kwargs: Any):
    """A tqdm bar on stderr: ten updates a second on a terminal, one every
    :data:`LOG_PROGRESS_INTERVAL_S` when stderr is a file or a pipe (a supervisor's log, CI), so that a log
    is not filled with bar redraws. Advance it with ``update`` (``refresh`` would bypass the interval)."""
    from tqdm import tqdm

    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else LOG_PROGRESS_INTERVAL_S)
    return tqdm(**kwargs)


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object last")
