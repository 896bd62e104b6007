"""``MarkerReader``: an irregular LSL marker stream delivered in order to any number of consumers."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import pylsl

from brainstream.realtime.acquisition._inlet import InletReader

log = logging.getLogger(__name__)

MarkerValue = str | float | int | tuple


class MarkerEvent(NamedTuple):
    """One marker: its LSL timestamp and value (str for string streams, number for 1-channel numeric
    streams, tuple for multi-channel ones). Unpacks as ``timestamp, value = event``."""

    timestamp: float
    value: MarkerValue


@dataclass(frozen=True)
class MarkerStats:
    markers: int
    dropped: int  # events dropped from full subscriber queues (summed over queues)
    lost: bool
    reconnects: int
    last_timestamp: float
    clock_offset: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "markers": self.markers,
            "dropped": self.dropped,
            "lost": int(self.lost),
            "reconnects": self.reconnects,
            "last_timestamp": self.last_timestamp,
            "clock_offset": self.clock_offset,
        }


class MarkerQueue:
    """One consumer's queue of :class:`MarkerEvent`, in arrival order, thread-safe.

    Parameters
    ----------
    maxsize : int
        When full, the oldest event is dropped and counted in :attr:`dropped` (with a warning), so a stuck
        consumer cannot grow memory without bound.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._items: deque[MarkerEvent] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, event: MarkerEvent) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
                log.warning("marker queue full (%d): dropped the oldest marker", self._maxsize)
            self._items.append(event)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> MarkerEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever); None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            return self._items.popleft()

    def drain(self) -> list[MarkerEvent]:
        """All queued events now, without waiting."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        return len(self._items)


class MarkerReader(InletReader):
    """Read an irregular marker stream (string or numeric) and fan its events out to subscribers.

    Parameters
    ----------
    name, stype, source_id : str | None
        Which stream (at least one; with none given, ``stype="Markers"``).
    processing_flags : int | sequence of str | None
        Default clock sync only: dejittering assumes a regular rate, which markers do not have.
    timeout : float
        Seconds to wait when resolving and opening.
    reconnect : bool
        Reconnect to a returning outlet with the same source_id.
    history : int
        How many recent events to keep for :meth:`events_between` and ``subscribe(replay=True)``.
    """

    _thread_name = "marker-reader"

    def __init__(
        self,
        name: str | None = None,
        stype: str | None = None,
        source_id: str | None = None,
        processing_flags: int | str | Iterable[str] | None = ("clocksync",),
        *,
        timeout: float = 5.0,
        reconnect: bool = True,
        history: int = 10_000,
        max_buflen: int = 360,
    ) -> None:
        if not (name or stype or source_id):
            stype = "Markers"
        super().__init__(
            name,
            stype,
            source_id,
            timeout=timeout,
            processing_flags=processing_flags,
            max_buflen=max_buflen,
            reconnect=reconnect,
        )
        self._queues: list[MarkerQueue] = []
        self._history: deque[MarkerEvent] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._n_markers = 0
        self._last_ts = float("nan")
        self._single = True

    def subscribe(self, maxsize: int = 10_000, replay: bool = False) -> MarkerQueue:
        """A new queue receiving every event from now on (and the kept history first if ``replay``)."""
        q = MarkerQueue(maxsize)
        with self._lock:
            if replay:
                for ev in self._history:
                    q.put(ev)
            self._queues.append(q)
        return q

    def unsubscribe(self, queue: MarkerQueue) -> None:
        with self._lock:
            if queue in self._queues:
                self._queues.remove(queue)

    def events_between(self, t0: float, t1: float) -> list[MarkerEvent]:
        """Kept events with ``t0 <= timestamp < t1``, in arrival order."""
        with self._lock:
            return [ev for ev in self._history if t0 <= ev.timestamp < t1]

    @property
    def stats(self) -> MarkerStats:
        with self._lock:
            dropped = sum(q.dropped for q in self._queues)
        return MarkerStats(
            self._n_markers, dropped, self._lost, self._reconnects, self._last_ts, self._clock_offset
        )

    def _on_connect(self, full: pylsl.StreamInfo) -> None:
        if full.nominal_srate() > 0:
            log.warning(
                "marker stream '%s' has a regular rate (%g Hz): every sample becomes an event",
                full.name(),
                full.nominal_srate(),
            )
        self._single = full.channel_count() == 1
        self._lost = False

    def _pull(self) -> bool:
        samples, ts = self._inlet.pull_chunk(timeout=0.05, max_samples=256, min_samples=1)
        if not ts:
            return False
        events = [
            MarkerEvent(float(t), s[0] if self._single else tuple(s))
            for s, t in zip(samples, ts, strict=True)
        ]
        with self._lock:
            self._history.extend(events)
            self._n_markers += len(events)
            self._last_ts = events[-1].timestamp
            queues = list(self._queues)
        for q in queues:
            for ev in events:
                q.put(ev)
        return True

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MarkerReader '{self.name}' {state}, {self._n_markers} markers>"
