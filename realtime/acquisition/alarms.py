"""Alarms raised by readers: a live set for ``status.<node>`` messages, a log, and callbacks."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pylsl

log = logging.getLogger(__name__)

# kinds of alarm a reader raises
STALLED = "stalled"  # no samples for longer than the stall threshold (cleared when samples resume)
LOST = "lost"  # the outlet went away (cleared on reconnection)
RECONNECTED = "reconnected"  # a new outlet with the same source_id was connected (transient)
GAP = "gap"  # missing samples detected from timestamps or the counter channel (transient)
NONFINITE = "nonfinite"  # NaN / Inf samples arrived (transient)
MISMATCH = "mismatch"  # a returning outlet has a different layout; not reconnected


@dataclass(frozen=True)
class Alarm:
    """One alarm event: raised (``active=True``) or cleared (``active=False``)."""

    kind: str
    message: str
    time: float  # pylsl.local_clock() when raised / cleared
    active: bool
    source: str = ""  # the reader's stream name


AlarmCallback = Callable[[Alarm], None]


class AlarmBoard:
    """Tracks active alarms; transient ones stay listed for ``hold_s`` after they last fired."""

    def __init__(self, source: str = "", hold_s: float = 5.0, log_size: int = 1000) -> None:
        self.source = source
        self.hold_s = hold_s
        self._active: dict[str, tuple[str, float | None]] = {}  # kind -> (message, expires or None)
        self._log: deque[Alarm] = deque(maxlen=log_size)
        self._callbacks: list[AlarmCallback] = []
        self._lock = threading.Lock()

    def add_callback(self, callback: AlarmCallback) -> None:
        """Call ``callback(alarm)`` on every raise and clear (from the reader's threads; keep it short)."""
        self._callbacks.append(callback)

    def raise_(self, kind: str, message: str, *, transient: bool = False) -> None:
        """Raise (or refresh) an alarm. Refreshing an active one updates its message quietly, so a
        condition that recurs every chunk (NaNs) is logged and notified once, not 100 times a second."""
        now = pylsl.local_clock()
        with self._lock:
            prev = self._active.get(kind)
            self._active[kind] = (message, now + self.hold_s if transient else None)
            if prev is not None and (prev[1] is None or prev[1] > now):
                return
            alarm = Alarm(kind, message, now, True, self.source)
            self._log.append(alarm)
        log.warning("%s: %s", self.source, message)
        self._notify(alarm)

    def clear(self, kind: str, message: str = "") -> None:
        with self._lock:
            if self._active.pop(kind, None) is None:
                return
            alarm = Alarm(kind, message or f"{kind} cleared", pylsl.local_clock(), False, self.source)
            self._log.append(alarm)
        log.info("%s: %s", self.source, alarm.message)
        self._notify(alarm)

    def is_active(self, kind: str) -> bool:
        return kind in self.active_kinds()

    def active_kinds(self) -> list[str]:
        now = pylsl.local_clock()
        with self._lock:
            return [k for k, (_, exp) in self._active.items() if exp is None or exp > now]

    @property
    def messages(self) -> list[str]:
        """Messages of the alarms active now (what a ``status.<node>`` message carries)."""
        now = pylsl.local_clock()
        with self._lock:
            return [msg for msg, exp in self._active.values() if exp is None or exp > now]

    @property
    def log(self) -> list[Alarm]:
        """Every raise and clear, oldest first (bounded)."""
        with self._lock:
            return list(self._log)

    def _notify(self, alarm: Alarm) -> None:
        for cb in list(self._callbacks):
            try:
                cb(alarm)
            except Exception:  # a faulty consumer must not stop acquisition
                log.exception("alarm callback %r failed", cb)
