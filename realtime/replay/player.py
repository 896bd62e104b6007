"""Play a recording as LSL outlets in real time (or ``speed`` times faster).

Scheduling: the player fixes an origin ``t0`` on ``pylsl.local_clock()`` and gives sample ``i`` the
timestamp ``t0 + (t_i - start) / speed``; each push happens when the last sample it carries is due. Times
come from the schedule, never from the time a push actually happened, so lateness never accumulates into
drift, however long the file. The player measures how late each push was (``worst_lag_ms``).

Disk reads happen in a prefetch thread one block (1 s of source time) ahead, so a slow read does not delay
a push, and memory holds a few blocks whatever the file length.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from realtime.lsl_info import make_stream_info
from realtime.replay.sources import Block, RawSource, XdfSource, open_recording

logger = logging.getLogger(__name__)

_END = object()


@dataclass
class PlayerStats:
    """What a replay did; ``worst_lag_ms`` is the largest delay of a push behind its schedule."""

    pushes: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    worst_lag_ms: float = 0.0
    mean_lag_ms: float = 0.0
    loops: int = 0
    t0: float | None = None
    first_push: float | None = None
    last_push: float | None = None
    samples_at_first_push: int = 0
    finished: bool = False
    lags: deque = field(default_factory=lambda: deque(maxlen=100_000), repr=False)
    # (scheduled, actual) LSL time of recent pushes, for the drift fit
    push_times: deque = field(default_factory=lambda: deque(maxlen=100_000), repr=False)

    def lag_percentile(self, q: float) -> float:
        """Percentile of push lag in ms over the last 100,000 pushes."""
        return float(np.percentile(np.asarray(self.lags), q) * 1e3) if self.lags else float("nan")

    def rate_error(self) -> float:
        """Drift of the pushes against their schedule: slope of a least-squares line of actual push time
        over scheduled time, minus 1 (0.0001 = 0.01 % fast or slow). Robust to the jitter of single pushes,
        unlike a first-to-last-push rate."""
        if len(self.push_times) < 10:
            return float("nan")
        due, actual = np.asarray(self.push_times).T
        slope = np.polyfit(due - due[0], actual - due[0], 1)[0]
        return float(slope - 1.0)

    def effective_rate(self, stream: str) -> float:
        """Samples per second of ``stream`` as actually pushed (first to last push, wall clock)."""
        if self.first_push is None or self.last_push is None or self.last_push <= self.first_push:
            return float("nan")
        return (self.samples[stream] - self.samples_at_first_push) / (self.last_push - self.first_push)


class Player:
    """Replay a recording (path or opened source) as LSL outlets.

    Parameters
    ----------
    source : str | Path | RawSource | XdfSource
        A recording path (FIF, EDF, BDF, BrainVision, EEGLAB, BIDS, XDF...) or an opened source.
    speed : float
        Playback speed; 10 plays ten times faster (timestamps are compressed alike).
    loop : bool
        Start over at the end, timestamps continuing; runs until :meth:`stop`.
    start, duration : float
        Play source seconds ``[start, start + duration)``; duration None plays to the end.
    chunk_ms : float
        Wall-clock milliseconds between pushes.
    name, source_id : str | None
        Name / source id of the signal outlet (markers: ``<name>-markers``); see
        :func:`realtime.replay.sources.open_recording`.
    markers : bool
        Replay annotations/events as a string marker outlet.
    wait_for_consumers : float
        Seconds to wait, after creating the outlets, for each outlet to get a consumer before the clock
        starts (LSL drops samples pushed while nobody listens).

    Examples
    --------
    >>> player = Player("sub-01_meg.fif", name="MEG", speed=1.0)  # doctest: +SKIP
    >>> player.start()               # plays in a background thread
    >>> ...; player.stop(); player.close()
    """

    def __init__(
        self,
        source: str | Path | RawSource | XdfSource,
        *,
        speed: float = 1.0,
        loop: bool = False,
        start: float = 0.0,
        duration: float | None = None,
        chunk_ms: float = 10.0,
        name: str | None = None,
        source_id: str | None = None,
        markers: bool = True,
        wait_for_consumers: float = 0.0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if not 0.5 <= chunk_ms <= 1000:
            raise ValueError(f"chunk_ms must be between 0.5 and 1000 ms, got {chunk_ms}")
        if start < 0 or (duration is not None and duration <= 0):
            raise ValueError(f"start must be >= 0 and duration > 0 (got start={start}, duration={duration})")
        if isinstance(source, str | Path):
            source = open_recording(source, name=name, source_id=source_id, markers=markers)
        self.source = source
        if start >= source.duration:
            raise ValueError(f"start={start:g} s is past the end of the recording ({source.duration:.3f} s)")
        self.speed = float(speed)
        self.loop = loop
        self.start_s = float(start)
        self.stop_s = source.duration if duration is None else min(source.duration, start + duration)
        self.chunk_s = chunk_ms / 1000.0
        self.wait_for_consumers = wait_for_consumers
        self.specs = [sp for sp in source.streams if markers or not sp.is_markers]
        self._keep = [i for i, sp in enumerate(source.streams) if markers or not sp.is_markers]
        self.outlets: list[pylsl.StreamOutlet] = []
        self.stats = PlayerStats(samples={sp.name: 0 for sp in self.specs})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def outlet_names(self) -> list[str]:
        return [sp.name for sp in self.specs]

    def open(self) -> Player:
        """Create the outlets (once)."""
        if self.outlets:
            return self
        for sp in self.specs:
            info = make_stream_info(
                sp.name, sp.stype, sp.ch_names, sp.sfreq, ch_types=sp.ch_types, units=sp.units,
                source_id=sp.source_id, channel_format=sp.channel_format,
            )  # fmt: skip
            replay = info.desc().append_child("replay")
            replay.append_child_value("speed", repr(self.speed))
            replay.append_child_value("start", repr(self.start_s))
            self.outlets.append(pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360))
        return self

    def start(self) -> Player:
        """Play in a background thread."""
        self.open()
        self._thread = threading.Thread(target=self._run_safely, name="replay", daemon=True)
        self._thread.start()
        return self

    def run(self) -> PlayerStats:
        """Play in this thread until the end (or :meth:`stop`); returns the stats."""
        self.open()
        self._play()
        return self.stats

    def stop(self) -> None:
        """Stop pushing (the outlets stay until :meth:`close`, so consumers can drain them)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a background replay to end; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Stop and destroy the outlets (close consumers' inlets first)."""
        self.stop()
        self.outlets.clear()
        self.source.close()

    def __enter__(self) -> Player:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ playing
    def _run_safely(self) -> None:
        try:
            self._play()
        except BaseException as exc:  # reported through .error; the session decides what to do
            self.error = exc
            logger.exception("replay stopped")

    def _put(self, q: queue.Queue, item) -> bool:
        """Queue ``item`` unless the replay stops first (never blocks a stop on a full queue)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _prefetch(self, q: queue.Queue) -> None:
        try:
            n_loop = 0
            while not self._stop.is_set():
                for block in self.source.blocks(self.start_s, self.stop_s):
                    if not self._put(q, (n_loop, block)):
                        return
                n_loop += 1
                if not self.loop:
                    break
        except Exception as exc:  # a read error ends the replay; _play re-raises it
            self._put(q, exc)
            return
        self._put(q, _END)

    def _play(self) -> None:
        if self.wait_for_consumers > 0:
            for outlet, sp in zip(self.outlets, self.specs, strict=True):
                if not outlet.wait_for_consumers(self.wait_for_consumers):
                    logger.warning(
                        "no consumer for %s after %.1f s; playing anyway", sp.name, self.wait_for_consumers
                    )
        q: queue.Queue = queue.Queue(maxsize=3)
        reader = threading.Thread(target=self._prefetch, args=(q,), name="replay-prefetch", daemon=True)
        reader.start()
        span = self.stop_s - self.start_s
        lag_sum = 0.0
        t0 = None
        try:
            while not self._stop.is_set():
                try:
                    item = q.get(timeout=0.1)
                except queue.Empty:
                    continue  # a slow read; check for stop() and wait again
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                n_loop, block = item
                if t0 is None:
                    # a little lead so the first push is not late by construction
                    t0 = pylsl.local_clock() + 0.02
                    self.stats.t0 = t0
                self.stats.loops = n_loop
                offset = n_loop * span - self.start_s  # source time -> time since the replay origin
                lag_sum = self._play_block(block, t0, offset, lag_sum)
        finally:
            self._stop.set()
            reader.join()
            self.stats.finished = True
        if self.stats.pushes:
            self.stats.mean_lag_ms = lag_sum / self.stats.pushes * 1e3

    def _play_block(self, block: Block, t0: float, offset: float, lag_sum: float) -> float:
        step = self.chunk_s * self.speed  # source seconds per push
        n_windows = max(1, int(np.ceil((block.t_end - block.t_start) / step - 1e-9)))
        cursors = [0] * len(self._keep)
        for w in range(n_windows):
            if self._stop.is_set():
                break
            w_end = block.t_end if w == n_windows - 1 else block.t_start + (w + 1) * step
            due = t0 + (w_end + offset) / self.speed
            wait = due - pylsl.local_clock()
            if wait > 0:
                time.sleep(wait)
            for k, idx in enumerate(self._keep):
                times = block.times[idx]
                b = len(times) if w == n_windows - 1 else int(np.searchsorted(times, w_end, side="left"))
                a = cursors[k]
                if b <= a:
                    continue
                cursors[k] = b
                stamps = (t0 + (times[a:b] + offset) / self.speed).tolist()
                values = block.values[idx]
                if self.specs[k].is_markers:
                    self.outlets[k].push_chunk(values[a:b], stamps)
                else:
                    self.outlets[k].push_chunk(np.ascontiguousarray(values[:, a:b].T), stamps)
                self.stats.samples[self.specs[k].name] += b - a
            now = pylsl.local_clock()
            lag = max(0.0, now - due)
            lag_sum += lag
            self.stats.lags.append(lag)
            self.stats.push_times.append((due, now))
            self.stats.worst_lag_ms = max(self.stats.worst_lag_ms, lag * 1e3)
            self.stats.pushes += 1
            if self.stats.first_push is None:
                self.stats.first_push = now
                self.stats.samples_at_first_push = self.stats.samples[self.specs[0].name]
            self.stats.last_push = now
        return lag_sum
