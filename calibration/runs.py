"""The runs of one subject's calibration on disk: ``run-NNN.json`` (state) beside ``run-NNN.xdf``.

Read by the session (to resume) and by the adaptation step (to learn from every run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class CalibrationError(RuntimeError):
    """A calibration cannot run or resume as asked; the message says what to do."""


def run_files(runs_dir: Path) -> list[tuple[Path, Path]]:
    """``(state json, xdf)`` of every run, in order."""
    return [(p, p.with_suffix(".xdf")) for p in sorted(runs_dir.glob("run-[0-9][0-9][0-9].json"))]


def read_run_state(path: Path) -> dict[str, Any]:
    """The state a run wrote beside its recording."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path} is unreadable ({exc}); delete that run's files to drop it") from None
