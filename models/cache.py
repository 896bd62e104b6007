"""The user's cache folder and a lock for building something in it once across processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """``$BRAINSTREAM_CACHE`` or ``$XDG_CACHE_HOME/brainstream`` or ``~/.cache/brainstream``."""
    if os.environ.get("BRAINSTREAM_CACHE"):
        return Path(os.environ["BRAINSTREAM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "brainstream"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the cache folder {path.parent} ({exc.strerror}); set BRAINSTREAM_CACHE to a "
            "writable folder"
        ) from None
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # parallel processes wait here instead of building twice
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
