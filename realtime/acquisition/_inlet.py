"""What stream and marker readers share: resolving, opening an inlet, the pull thread, reconnection.

liblsl can recover a lost stream by itself, but silently: the reader would never know it had switched to a
new outlet. So inlets are opened with ``recover=False`` and the reader reconnects itself, to an outlet with
the same source_id and the same layout, and records the gap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterable

import pylsl
from pylsl.util import LostError

from brainstream.realtime.acquisition.alarms import LOST, MISMATCH, RECONNECTED, AlarmBoard, AlarmCallback
from brainstream.realtime.acquisition.deduced_stamps import DeducedStartStamps
from brainstream.realtime.acquisition.resolve import describe_selection, resolve_stream, summarize

log = logging.getLogger(__name__)

PROCESSING_FLAGS = {
    "clocksync": pylsl.proc_clocksync,
    "dejitter": pylsl.proc_dejitter,
    "monotonize": pylsl.proc_monotonize,
    "threadsafe": pylsl.proc_threadsafe,
}


def processing_flags_value(flags: int | str | Iterable[str] | None) -> int:
    """pylsl post-processing flags from an int or names (``("clocksync", "dejitter")``); None/() = none."""
    if flags is None:
        return pylsl.proc_none
    if isinstance(flags, int):
        if flags < 0 or flags > pylsl.proc_ALL:
            raise ValueError(f"processing_flags {flags} is not a combination of pylsl.proc_* flags")
        return flags
    if isinstance(flags, str):
        flags = [flags]
    value = 0
    for name in flags:
        if name == "all":
            value |= pylsl.proc_ALL
        elif name in PROCESSING_FLAGS:
            value |= PROCESSING_FLAGS[name]
        else:
            raise ValueError(
                f"unknown processing flag {name!r}; use any of {sorted(PROCESSING_FLAGS)} or 'all'"
            )
    return value


class InletReader:
    """Base of :class:`StreamReader` and :class:`MarkerReader`: one inlet, one pull thread, reconnection.

    Subclasses implement ``_on_connect(full_info)`` (check the stream, allocate), ``_pull()`` (one pull,
    returns whether data came) and may override ``_on_idle()`` (called after each pull).
    """

    _thread_name = "inlet"

    def __init__(
        self,
        name: str | None,
        stype: str | None,
        source_id: str | None,
        *,
        timeout: float,
        processing_flags: int | str | Iterable[str] | None,
        max_buflen: int,
        reconnect: bool,
    ) -> None:
        if not (name or stype or source_id):
            raise ValueError("give at least one of name, stype, source_id to select a stream")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self._selection = (name, stype, source_id)
        self._timeout = float(timeout)
        self._flags = processing_flags_value(processing_flags)
        self._max_buflen = int(max_buflen)
        self._reconnect_enabled = bool(reconnect)
        self._inlet: pylsl.StreamInlet | None = None
        self._stream_info: pylsl.StreamInfo | None = None
        self._uid = ""
        self._rejected_uids: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False
        self._reconnects = 0
        self._reconnect_pending = False
        self._clock_offset = float("nan")
        self._next_clock_poll = 0.0
        self._last_reconnect_try = 0.0
        self._alarms = AlarmBoard(source=describe_selection(name, stype, source_id))
        self._deduced = DeducedStartStamps(describe_selection(name, stype, source_id))

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        """Whether an inlet is open (False before ``connect`` and while the outlet is lost)."""
        return self._inlet is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def connect(self) -> InletReader:
        """Resolve the stream, open the inlet and read its description. Idempotent."""
        if self._inlet is not None:
            return self
        info = resolve_stream(*self._selection, timeout=self._timeout)
        inlet, full = self._open(info)
        try:
            self._on_connect(full)
        except Exception:
            inlet.close_stream()
            raise
        self._inlet, self._stream_info, self._uid = inlet, full, info.uid()
        self._alarms.source = full.name()
        return self

    def start(self) -> InletReader:
        """Connect if needed and start pulling in a background thread."""
        if self.running:
            return self
        self.connect()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{self._thread_name}:{self.name}", daemon=True
        )
        self._thread.start()
        self._start_extra_threads()
        return self

    def stop(self) -> None:
        """Stop the threads and close the inlet (the reader can be started again)."""
        self._stop.set()
        for t in self._threads():
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("%s thread did not stop within 5 s", t.name)
        self._thread = None
        self._close_inlet()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)  # absent when __init__ raised
        if stop is not None:
            stop.set()

    def _threads(self) -> list[threading.Thread]:
        return [self._thread] if self._thread is not None else []

    def _start_extra_threads(self) -> None:
        pass

    # ------------------------------------------------------------------ description
    @property
    def name(self) -> str:
        """Stream name (the selection before connecting)."""
        if self._stream_info is not None:
            return self._stream_info.name()
        return self._selection[0] or self._selection[2] or self._selection[1] or "?"

    @property
    def source_id(self) -> str:
        return self._stream_info.source_id() if self._stream_info is not None else (self._selection[2] or "")

    @property
    def stream_info(self) -> pylsl.StreamInfo:
        """The full LSL stream info (with ``desc``)."""
        return self._require_info()

    @property
    def alarms(self) -> list[str]:
        """Messages of the alarms active now (for ``status.<node>`` messages)."""
        return self._alarms.messages

    @property
    def alarm_log(self):
        """Every alarm raised and cleared since start (:class:`~realtime.acquisition.alarms.Alarm`)."""
        return self._alarms.log

    @property
    def state(self) -> str:
        """``"stopped"``, ``"lost"``, ``"stalled"`` or ``"running"``."""
        if not self.running:
            return "stopped"
        if self._lost:
            return "lost"
        return "stalled" if getattr(self, "_stalled", False) else "running"

    def status(self) -> dict:
        """``{"state", "alarms", "stats"}``: the extras of a ``status.<node>`` bus message."""
        return {"state": self.state, "alarms": self.alarms, "stats": self.stats.as_dict()}

    def add_alarm_callback(self, callback: AlarmCallback) -> None:
        """Call ``callback(alarm)`` on every alarm raised or cleared, from the reader's threads."""
        self._alarms.add_callback(callback)

    def _require_info(self) -> pylsl.StreamInfo:
        if self._stream_info is None:
            raise RuntimeError(
                f"reader for {self._alarms.source} is not connected; call connect() or start()"
            )
        return self._stream_info

    # ------------------------------------------------------------------ inlet
    def _open(self, info: pylsl.StreamInfo) -> tuple[pylsl.StreamInlet, pylsl.StreamInfo]:
        inlet = pylsl.StreamInlet(
            info, max_buflen=self._max_buflen, recover=False, processing_flags=self._flags
        )
        try:
            full = inlet.info(timeout=self._timeout)
            inlet.open_stream(timeout=self._timeout)
        except Exception:
            inlet.close_stream()
            raise
        return inlet, full

    def _close_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            # closing a lost inlet may fail; it is being dropped anyway
            with contextlib.suppress(Exception):
                inlet.close_stream()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._inlet is None:
                info = self._find_returning(require_new=False)
                if info is None or not self._switch_to(info):
                    self._stop.wait(0.2)
                continue
            try:
                self._pull()
            except LostError:
                self._on_lost()
                continue
            except Exception as exc:  # keep acquiring: one bad chunk must not end the session
                log.exception("%s: pull failed", self.name)
                self._alarms.raise_("error", f"{self.name}: pull failed: {exc}", transient=True)
                self._stop.wait(0.05)
            now = pylsl.local_clock()
            if now >= self._next_clock_poll:
                self._poll_clock_offset(now)
            self._on_idle(now)

    def _settle_start(self, values, ts, sfreq: float):
        """A regular stream's pulled chunk with a connection's deduced-from-0 stamps put back
        (:mod:`~realtime.acquisition.deduced_stamps`), or ``None`` while its first samples are held."""
        return self._deduced.settle(values, ts, sfreq, self._uid, self._stamp_offset)

    def _stamp_offset(self) -> float:
        """What the inlet's post-processing adds to the outlet's timestamps (0 without ``clocksync``)."""
        if not self._flags & pylsl.proc_clocksync:
            return 0.0
        try:
            return float(self._inlet.time_correction(timeout=1.0))
        except Exception:  # not estimated in time (or the outlet just went): the last estimate, else 0
            return 0.0 if math.isnan(self._clock_offset) else self._clock_offset

    def _poll_clock_offset(self, now: float) -> None:
        self._next_clock_poll = now + 1.0
        with contextlib.suppress(RuntimeError, LostError):  # not estimated yet
            self._clock_offset = float(self._inlet.time_correction(timeout=0.0))

    def _on_lost(self) -> None:
        self._close_inlet()
        self._lost = True
        if self.source_id and self._reconnect_enabled:
            what = f"waiting for an outlet with source_id '{self.source_id}' to return"
        elif not self._reconnect_enabled:
            what = "reconnection is disabled"
        else:
            what = "it has no source_id, so it cannot be recovered: restart the reader once it is back"
        self._alarms.raise_(LOST, f"stream '{self.name}' lost (outlet gone); {what}")

    def _find_returning(self, require_new: bool) -> pylsl.StreamInfo | None:
        """An outlet with our source_id other than the current one, or None (rate-limited, blocks <= 0.3 s).

        ``require_new``: the current outlet may still be alive (a stall), so wait for two answers.
        """
        sid = self.source_id
        if not (sid and self._reconnect_enabled):
            return None
        now = pylsl.local_clock()
        if now - self._last_reconnect_try < 0.5:
            return None
        self._last_reconnect_try = now
        # wait for more answers than the outlets we would skip, or the skipped ones could end the wait
        minimum = (2 if require_new else 1) + len(self._rejected_uids)
        found = pylsl.resolve_byprop("source_id", sid, minimum=minimum, timeout=0.3)
        candidates = [i for i in found if i.uid() != self._uid and i.uid() not in self._rejected_uids]
        return candidates[0] if candidates else None

    def _switch_to(self, info: pylsl.StreamInfo) -> bool:
        """Open a returning outlet and make it the inlet if its layout matches (reader thread only)."""
        sid = self.source_id
        try:
            inlet, full = self._open(info)
        except Exception as exc:
            log.warning("%s: could not open returning outlet: %s", self.name, exc)
            return False
        problem = self._layout_change(full)
        if problem:
            inlet.close_stream()
            self._rejected_uids.add(info.uid())
            self._alarms.raise_(
                MISMATCH, f"an outlet with source_id '{sid}' returned with {problem}; not reconnected"
            )
            return False
        self._close_inlet()
        self._inlet, self._uid = inlet, info.uid()
        self._lost = False
        self._reconnects += 1
        self._reconnect_pending = True
        self._clock_offset = float("nan")
        self._next_clock_poll = 0.0
        self._alarms.clear(LOST, f"stream '{self.name}' back: reconnected to {summarize(info)}")
        self._alarms.clear(MISMATCH)
        self._alarms.raise_(
            RECONNECTED, f"stream '{self.name}' reconnected (#{self._reconnects})", transient=True
        )
        return True

    def _layout_change(self, full: pylsl.StreamInfo) -> str:
        """'' when ``full`` has the layout of the stream we read, else what differs."""
        old = self._require_info()
        for what, a, b in (
            ("channel count", old.channel_count(), full.channel_count()),
            ("channel format", old.channel_format(), full.channel_format()),
            ("rate", old.nominal_srate(), full.nominal_srate()),
        ):
            if a != b:
                return f"a different {what} ({b} instead of {a})"
        return ""

    # ------------------------------------------------------------------ subclass hooks
    def _on_connect(self, full: pylsl.StreamInfo) -> None:
        raise NotImplementedError

    def _pull(self) -> bool:
        raise NotImplementedError

    def _on_idle(self, now: float) -> None:
        pass
