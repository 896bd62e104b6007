"""Play a recording as LSL outlets in real time (or ``speed`` times faster).

Scheduling: the player fixes an origin ``t0`` on ``pylsl.local_clock()`` and gives sample ``i`` the
timestamp ``t0 + (t_i - start) / speed``; each push happens when the last sample it carries is due. Times
come from the schedule, never from the time a push actually happened, so lateness never accumulates into
drift, however long the file. The player measures how late each push was (``worst_lag_ms``).

What makes a push late, and what the player does about it (measured with ``brainstream bench replay``,
see docs/benchmarks.md):

- ``time.sleep`` wakes late (timer slack, wake-up latency): the player sleeps until ``spin_ms`` before
  the deadline and spins on the clock for the rest. The spin costs CPU (about ``spin_ms / chunk_ms`` of a
  core, reported as ``PlayerStats.cpu_share``); ``spin_ms=0`` turns it off.
- Another Python thread holds the GIL when the deadline comes (a waiting thread gets it only after the
  5 ms switch interval): the player reads the file in its own thread, right after a push, in blocks of
  about 0.25 s, so no reader thread competes for the GIL and a read never sits between a deadline and its
  push. A read slower than the gap to the next push (a cold network disk) shows up as lag.
- A full garbage collection (tens of ms on a large heap) pauses every thread: the objects that exist when
  playback starts are frozen (``gc.freeze``) until it ends, so collections only walk new objects.
- Other processes take the CPU (the largest cause on a busy machine): the push thread asks for
  ``SCHED_FIFO`` (or a lower nice value) when the OS allows it (root, ``CAP_SYS_NICE``, an ``rtprio``
  limit), and plays at normal priority otherwise; ``PlayerStats.scheduling`` says which. The previous
  priority comes back when playback ends, or as soon as the push thread keeps a core more than half busy
  (a speed it cannot keep up with), so that a real-time thread never starves the machine.

Memory holds two blocks whatever the file length.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from brainstream.realtime.lsl_info import make_stream_info
from brainstream.realtime.replay.sources import Block, RawSource, XdfSource, open_recording

logger = logging.getLogger(__name__)

# SCHED_FIFO priority of the push thread when allowed: above every normal thread, low among real-time ones
# (below the kernel's own threaded interrupts at 50)
_RT_PRIORITY = 10
# nice value asked for when SCHED_FIFO is not allowed but a lower nice value is (RLIMIT_NICE)
_NICE = -10
# share of a core above which the push thread gives its raised priority back (playing normally takes
# ~5 %, plus spin_ms / chunk_ms for the spin)
_MAX_BUSY = 0.5
# source seconds per block read from the file: a read is short (~0.3 ms for 272 ch at 1200 Hz) and fits
# in the gap after a push; the player rounds it to a whole number of pushes
_BLOCK_S = 0.25
_gc_lock = threading.Lock()
_gc_frozen = 0  # players playing with the heap frozen (gc.freeze is process-wide)


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
    #: how the push thread was scheduled: "SCHED_FIFO 10", "nice -10" or "normal" (and whether it gave a
    #: raised priority back because it kept a core more than half busy)
    scheduling: str = "normal"
    #: CPU time of the push thread over the wall time of the playback (1.0 = one core); spinning costs
    #: about ``spin_ms / chunk_ms`` of it
    cpu_share: float = float("nan")
    #: seconds spent waiting for consumers before the clock started, and the outlets that had none by then
    waited_s: float = 0.0
    unheard: list = field(default_factory=list)
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
    events_from_stim : str | None
        Also replay the events of a stim channel as markers: its name, or ``"auto"`` (see
        :func:`realtime.replay.sources.stim_channel`).
    wait_for_consumers : float
        Seconds to wait, after creating the outlets, until every outlet (signal and markers) has a first
        consumer, before the clock starts: LSL drops what is pushed while nobody listens, so a consumer
        connected by then receives sample 0 and marker 0. Playing starts anyway when the time is up (with a
        warning naming the outlets nobody listened to), or at once with 0.
    spin_ms : float
        Sleep until this many milliseconds before each push's deadline, then spin on the clock: absorbs
        the late wake-ups of ``time.sleep`` on a busy machine, at the cost of about ``spin_ms / chunk_ms``
        of a CPU core. 0 only sleeps.
    priority : bool
        Ask the OS to schedule the push thread ahead of normal threads (``SCHED_FIFO``, else a lower nice
        value) when it allows it; plays at normal priority when it does not (no error), and goes back to
        normal priority if the push thread keeps a core more than half busy (a speed it cannot keep up
        with), so that it never starves the machine.
    freeze_gc : bool
        Freeze the objects that exist when playback starts (``gc.freeze``) so that a garbage collection
        during playback, in any thread, does not walk the whole heap; undone when playback ends.

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
        events_from_stim: str | None = None,
        wait_for_consumers: float = 0.0,
        spin_ms: float = 0.5,
        priority: bool = True,
        freeze_gc: bool = True,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if not 0.5 <= chunk_ms <= 1000:
            raise ValueError(f"chunk_ms must be between 0.5 and 1000 ms, got {chunk_ms}")
        if not 0 <= spin_ms <= chunk_ms:
            raise ValueError(f"spin_ms must be between 0 and chunk_ms ({chunk_ms} ms), got {spin_ms}")
        if wait_for_consumers < 0:
            raise ValueError(f"wait_for_consumers must be >= 0 seconds, got {wait_for_consumers}")
        if start < 0 or (duration is not None and duration <= 0):
            raise ValueError(f"start must be >= 0 and duration > 0 (got start={start}, duration={duration})")
        if isinstance(source, str | Path):
            source = open_recording(
                source, name=name, source_id=source_id, markers=markers, events_from_stim=events_from_stim
            )
        self.source = source
        if start >= source.duration:
            raise ValueError(f"start={start:g} s is past the end of the recording ({source.duration:.3f} s)")
        self.speed = float(speed)
        self.loop = loop
        self.start_s = float(start)
        self.stop_s = source.duration if duration is None else min(source.duration, start + duration)
        self.chunk_s = chunk_ms / 1000.0
        self.wait_for_consumers = wait_for_consumers
        self.spin_s = spin_ms / 1000.0
        self.priority = priority
        self.freeze_gc = freeze_gc
        self.specs = [sp for sp in source.streams if markers or not sp.is_markers]
        self._keep = [i for i, sp in enumerate(source.streams) if markers or not sp.is_markers]
        self.outlets: list[pylsl.StreamOutlet] = []
        self.stats = PlayerStats(samples={sp.name: 0 for sp in self.specs})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._lag_sum = 0.0
        self._clock_offset = 0.0  # pylsl.local_clock() - time.monotonic(), measured at each block

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

    def linger(self, seconds: float) -> None:
        """After the last push, keep the outlets up to ``seconds`` while a consumer is still connected:
        liblsl drops what it has not sent yet when an outlet is destroyed, so closing at once can cut the
        last pushes off a recording (seen under load: the last 120 samples of a CTF file)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(o.have_consumers() for o in self.outlets):
            time.sleep(0.02)

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

    def _blocks(self) -> Iterator[tuple[int, Block]]:
        """``(loop number, block)`` in playing order, each read from the file when asked for."""
        step = self.chunk_s * self.speed  # source seconds per push
        # whole pushes per block, so that no push straddles two blocks; one push per block when a push
        # carries more than _BLOCK_S (fast replays), at most 1 s of source time (memory)
        block_s = step * max(1, int(_BLOCK_S / step + 1e-9)) if step < 1.0 else 1.0
        n_loop = 0
        while not self._stop.is_set():
            for block in self.source.blocks(self.start_s, self.stop_s, block_s):
                yield n_loop, block
            n_loop += 1
            if not self.loop:
                return

    def _await_consumers(self) -> None:
        """Wait until every outlet has a consumer, up to ``wait_for_consumers`` seconds in all (or a stop)."""
        t_wait = time.monotonic()
        deadline = t_wait + self.wait_for_consumers
        waiting = list(zip(self.outlets, self.specs, strict=True))
        while waiting and not self._stop.is_set():
            waiting = [(outlet, sp) for outlet, sp in waiting if not outlet.have_consumers()]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.005)  # one poll costs microseconds; 5 ms is far below any consumer's connect time
        self.stats.waited_s = time.monotonic() - t_wait
        self.stats.unheard = [sp.name for _, sp in waiting]
        if waiting and not self._stop.is_set():
            logger.warning(
                "no consumer for %s after %.1f s; playing anyway (pushes before one connects are lost)",
                ", ".join(self.stats.unheard),
                self.wait_for_consumers,
            )

    def _play(self) -> None:
        if self.wait_for_consumers > 0:
            self._await_consumers()
        span = self.stop_s - self.start_s
        blocks = self._blocks()
        t0 = None
        cpu0, wall0 = time.thread_time(), time.monotonic()
        try:
            with _ThreadPriority(self.priority) as priority, _frozen_gc(self.freeze_gc):
                self.stats.scheduling = priority.how
                pending = next(blocks, None)  # the first read happens before the clock starts
                while pending is not None and not self._stop.is_set():
                    n_loop, block = pending
                    if t0 is None:
                        # a little lead so the first push is not late by construction
                        t0 = pylsl.local_clock() + 0.02
                        self.stats.t0 = t0
                    self.stats.loops = n_loop
                    offset = n_loop * span - self.start_s  # source time -> time since the replay origin
                    cpu, wall = time.thread_time(), time.monotonic()
                    pending = self._play_block(block, t0, offset, blocks)
                    busy = (time.thread_time() - cpu) / max(time.monotonic() - wall, 1e-6)
                    if priority.raised and busy > _MAX_BUSY:
                        # a schedule this thread cannot keep (or a spin window near chunk_ms): at a
                        # real-time priority it would starve every other thread on its core
                        priority.restore()
                        self.stats.scheduling = f"{priority.how}, then normal (push thread saturated)"
                        logger.warning("replay push thread %.0f %% busy: back to normal priority", busy * 100)
        finally:
            blocks.close()
            self._stop.set()
            self.stats.finished = True
            wall = time.monotonic() - wall0
            if wall > 0:
                self.stats.cpu_share = (time.thread_time() - cpu0) / wall
        if self.stats.pushes:
            self.stats.mean_lag_ms = self._lag_sum / self.stats.pushes * 1e3

    def _wait_until(self, due: float) -> None:
        """Return at ``due`` (LSL clock): sleep until ``spin_s`` before, then spin."""
        wait = due - pylsl.local_clock() - self.spin_s
        if wait > 0:
            time.sleep(wait)
        if self.spin_s > 0:
            # spin on time.monotonic: it does not release the GIL as a ctypes call into liblsl does, so
            # no other thread can take the GIL between the deadline and the push
            deadline = due - self._clock_offset
            while time.monotonic() < deadline:
                pass

    def _play_block(
        self, block: Block, t0: float, offset: float, blocks: Iterator[tuple[int, Block]]
    ) -> tuple[int, Block] | None:
        """Push ``block`` on schedule; read the next block from ``blocks`` in a gap between two pushes
        and return it (None at the end)."""
        step = self.chunk_s * self.speed  # source seconds per push
        n_windows = max(1, int(np.ceil((block.t_end - block.t_start) / step - 1e-9)))
        cursors = [0] * len(self._keep)
        self._clock_offset = pylsl.local_clock() - time.monotonic()
        pending: tuple[int, Block] | None = None
        read = False
        for w in range(n_windows):
            if self._stop.is_set():
                break
            w_end = block.t_end if w == n_windows - 1 else block.t_start + (w + 1) * step
            due = t0 + (w_end + offset) / self.speed
            self._wait_until(due)
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
            self._record_push(due, now)
            # read the next block right after a push, once the gap to the next push leaves room for it
            # (a read takes a fraction of a push interval); the last push of a block reads in any case
            room = due + self.chunk_s - self.spin_s - now
            if not read and (room > self.chunk_s / 2 or w == n_windows - 1):
                pending, read = next(blocks, None), True
        if not read and not self._stop.is_set():
            pending = next(blocks, None)
        return pending

    def _record_push(self, due: float, now: float) -> None:
        lag = max(0.0, now - due)
        self._lag_sum += lag
        self.stats.lags.append(lag)
        self.stats.push_times.append((due, now))
        self.stats.worst_lag_ms = max(self.stats.worst_lag_ms, lag * 1e3)
        self.stats.pushes += 1
        if self.stats.first_push is None:
            self.stats.first_push = now
            self.stats.samples_at_first_push = self.stats.samples[self.specs[0].name]
        self.stats.last_push = now


class _ThreadPriority:
    """Schedule the calling thread ahead of normal threads, if the OS allows it, until :meth:`restore`.

    ``how`` says what was obtained ("SCHED_FIFO 10", "nice -10" or "normal"). :meth:`restore` (also on
    leaving the ``with`` block) gives the thread its previous policy and nice value back; it must run in
    the same thread. Linux only: elsewhere these calls would change the whole process.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.how = "normal"
        self._restore = None

    def __enter__(self) -> _ThreadPriority:
        if not self.enabled or not sys.platform.startswith("linux"):
            return self
        tid = threading.get_native_id()
        try:
            # pid 0: the calling thread (Linux schedules threads, not processes)
            policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_RT_PRIORITY))
            self.how = f"SCHED_FIFO {_RT_PRIORITY}"
            self._restore = lambda: os.sched_setscheduler(0, policy, param)
        except (OSError, AttributeError):  # not root, no CAP_SYS_NICE, no rtprio limit
            try:
                nice = os.getpriority(os.PRIO_PROCESS, tid)
                if nice > _NICE:
                    os.setpriority(os.PRIO_PROCESS, tid, _NICE)
                    self.how = f"nice {_NICE}"
                    self._restore = lambda: os.setpriority(os.PRIO_PROCESS, tid, nice)
            except (OSError, AttributeError):
                pass
        if self._restore is None:
            logger.debug("replay plays at normal priority (no permission for SCHED_FIFO or a lower nice)")
        return self

    @property
    def raised(self) -> bool:
        return self._restore is not None

    def restore(self) -> None:
        if self._restore is not None:
            with contextlib.suppress(OSError):
                self._restore()
            self._restore = None

    def __exit__(self, *exc) -> None:
        self.restore()


@contextlib.contextmanager
def _frozen_gc(enabled: bool) -> Iterator[None]:
    """``gc.freeze()`` while the block runs; nested and concurrent players unfreeze with the last one."""
    global _gc_frozen
    if not enabled:
        yield
        return
    with _gc_lock:
        if _gc_frozen == 0:
            gc.freeze()
        _gc_frozen += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_frozen -= 1
            if _gc_frozen == 0:
                gc.unfreeze()  # back into the oldest generation, collected as usual from now on
