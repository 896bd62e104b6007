"""What the display keeps of a whole run, in memory that stops growing: preallocated numeric rings.

A Python float in a deque costs 32 bytes and a drawn window's row of strings and floats about 300; at the
continuous demo's 20 draws and ~100 pieces of GUI work a second, the display's whole-run records grew by
~30 MB an hour until their caps. Here every field is 8 bytes in a :class:`~brainstream.realtime.ringbuffer.
RingBuffer` (allocated once, filled in place, oldest rows overwritten), and the strings of a drawn window
(topic, source, image id) are indices into tables of the distinct values seen, which a run names few of.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from brainstream.realtime.ringbuffer import RingBuffer

# distinct sources and image ids remembered by name; later new ones are kept as None (a flood of made-up
# ids on the bus must not grow the table without bound)
MAX_NAMES = 65_536
_FIELDS = ("topic", "src", "seq", "t_sample", "image_id", "t_received", "t_draw_start")


class _Names:
    """Strings ↔ small integers; ``-1`` for None and for names past ``limit``."""

    def __init__(self, limit: int = MAX_NAMES) -> None:
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        self._limit = limit

    def code(self, name: Any) -> int:
        if name is None:
            return -1
        name = str(name)
        code = self._codes.get(name)
        if code is None:
            if len(self._names) >= self._limit:
                return -1
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def find(self, name: str) -> int:
        """The code of a name already seen, else -2 (matches no row; -1 is None's)."""
        return self._codes.get(name, -2)

    def name(self, code: float) -> str | None:
        return None if code < 0 else self._names[int(code)]


class DrawLog:
    """One row per drawn retrieval or image (the newest ``capacity``), with ``t_drawn`` as its timestamp.

    Parameters
    ----------
    capacity : int
        Rows kept; the oldest are overwritten.

    Notes
    -----
    One writer thread; the display state's lock serialises callers.
    """

    def __init__(self, capacity: int) -> None:
        self._ring = RingBuffer(len(_FIELDS), capacity, dtype=np.float64)
        self._names = _Names()

    def __len__(self) -> int:
        return len(self._ring)

    def add(
        self,
        topic: str,
        src: Any,
        seq: Any,
        t_sample: float,
        t_drawn: float,
        image_id: Any,
        t_received: float,
        t_draw_start: float,
    ) -> None:
        seq_value = float(seq) if isinstance(seq, int | float) and not isinstance(seq, bool) else np.nan
        row = (
            self._names.code(topic),
            self._names.code(src),
            seq_value,
            t_sample,
            self._names.code(image_id),
            t_received,
            t_draw_start,
        )
        self._ring.write(np.asarray(row, dtype=np.float64)[:, None], np.array([t_drawn], dtype=np.float64))

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        return self._ring.read_last(len(self._ring))

    def latencies_ms(self, topic: str) -> np.ndarray:
        """Sample → display (ms) of every kept row of ``topic``, oldest first."""
        data, t_drawn = self._rows()
        mine = data[0] == self._names.find(topic)
        return (t_drawn[mine] - data[3][mine]) * 1e3

    def since(self, horizon: float, topics: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per topic, ``(t_drawn, sample→display ms)`` of the rows drawn at or after ``horizon``."""
        # the latency plot asks every frame: copy only the recent rows (drawn in time order), not the ring
        data, t_drawn = self._ring.read_between(horizon, math.inf)
        out = {}
        for topic in topics:
            mine = data[0] == self._names.find(topic)
            out[topic] = (t_drawn[mine], (t_drawn[mine] - data[3][mine]) * 1e3)
        return out

    def records(self) -> list[dict[str, Any]]:
        """The kept rows as dicts, oldest first (the display summary's ``draw_records``)."""
        data, t_drawn = self._rows()
        out = []
        for k in range(len(t_drawn)):
            topic, src, seq, t_sample, image_id, t_received, t_start = data[:, k]
            out.append(
                {
                    "topic": self._names.name(topic),
                    "src": self._names.name(src),
                    "seq": None if np.isnan(seq) else int(seq),
                    "t_sample": float(t_sample),
                    "t_drawn": float(t_drawn[k]),
                    "image_id": self._names.name(image_id),
                    "t_received": float(t_received),
                    "t_draw_start": float(t_start),
                    "sample_to_display_ms": float((t_drawn[k] - t_sample) * 1e3),
                }
            )
        return out


class ValueLog:
    """The newest ``capacity`` values of one kind (e.g. ms of GUI work), 8 bytes each."""

    def __init__(self, capacity: int) -> None:
        self._ring = RingBuffer(1, capacity, dtype=np.float64)

    def add(self, value: float, t: float) -> None:
        self._ring.write(np.array([[value]], dtype=np.float64), np.array([t], dtype=np.float64))

    def values(self) -> np.ndarray:
        return self._ring.read_last(len(self._ring))[0][0]
