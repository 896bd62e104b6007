"""Record any number of LSL streams, and streams pushed in-process, into one crash-safe XDF recording.

Each LSL stream gets its own thread: it pulls chunks from a plain ``pylsl.StreamInlet`` (timestamps as
sent, no post-processing, as LabRecorder records them), hands a Samples chunk to the writer at least every
``chunk_interval`` seconds and measures the clock offset at least every ``clock_offset_interval`` seconds.
In-process streams (the decoder's embeddings, retrievals...) are pushed through a handle from
:meth:`Recorder.add_local_stream`. The :class:`~realtime.recording.xdf_writer.XdfWriter` flushes, fsyncs
and writes a Boundary chunk every ``flush_interval`` seconds.

Example
-------
>>> with Recorder("session.xdf") as rec:            # doctest: +SKIP
...     rec.add_stream("MEG-replay")
...     rec.add_stream("MEG-replay-markers")
...     hdr = StreamHeader.local("embeddings", "Embedding", [f"d{i}" for i in range(768)])
...     emb = rec.add_local_stream(hdr)
...     emb.push(vec[:, None], [t_sample])
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from brainstream.realtime.acquisition._inlet import InletReader
from brainstream.realtime.recording.xdf_writer import StreamHeader, XdfWriter

logger = logging.getLogger(__name__)

#: name of the marker stream of session events (gaps, losses, reconnections, restarts) in every recording
SESSION_EVENTS_STREAM = "session-events"

_NP_DTYPES = {"float32": np.float32, "double64": np.float64, "int8": np.int8, "int16": np.int16,
              "int32": np.int32, "int64": np.int64}  # fmt: skip


class LocalStream:
    """Handle for an in-process stream; :meth:`push` may be called from any thread."""

    def __init__(self, writer: XdfWriter, stream_id: int, header: StreamHeader) -> None:
        self._writer = writer
        self.stream_id = stream_id
        self.header = header
        self.n_samples = 0

    def push(self, values, timestamps) -> None:
        """Record samples: ``values`` (n_channels, n) numeric, or n string samples; ``timestamps`` (n,) LSL s.

        Never raises for a stopped or failed recording (the samples are dropped and counted by the writer).
        """
        ts = np.atleast_1d(np.asarray(timestamps, dtype=np.float64))
        self._writer.write_samples(self.stream_id, values, ts)
        self.n_samples += ts.size


class _LslStreamRecorder(InletReader):
    """Pull one LSL stream into the writer until stopped.

    The inlet, the pull thread and reconnection are the decoder's (:class:`InletReader`): the outlet's loss is
    noticed at once and raised as the same ``lost`` alarm, a returning outlet with the same source_id is
    reconnected (``reconnected``) and the hole between the last sample before and the first after is
    reported as a ``gap`` event, so a recording says what it lacks (before, liblsl recovered silently).
    """

    _thread_name = "record"

    def __init__(
        self,
        info: pylsl.StreamInfo,
        writer: XdfWriter,
        *,
        recover: bool,
        chunk_interval: float,
        clock_offset_interval: float,
        timeout: float,
        on_error: Callable[[str], None] | None = None,
        on_event: Callable[[str, str, dict], None] | None = None,
    ) -> None:
        super().__init__(
            info.name(), None, info.source_id() or None, timeout=timeout, processing_flags=None,
            max_buflen=360, reconnect=recover,
        )  # fmt: skip
        self.writer = writer
        self.on_error = on_error
        self.on_event = on_event
        self.chunk_interval = chunk_interval
        self.clock_offset_interval = clock_offset_interval
        self.error: str | None = None
        self.n_samples = 0
        self.n_chunks = 0
        self.n_gaps = 0
        self.missing_samples = 0
        self._pend_v: list = []
        self._pend_t: list[np.ndarray] = []
        self._last_ts: float | None = None
        self._last_emit = time.monotonic()
        self._next_offset = 0.0
        self._emit_lock = threading.Lock()
        self.add_alarm_callback(self._on_alarm)
        inlet, full = self._open(info)  # this exact outlet (add_stream resolved and checked it)
        self._on_connect(full)
        self._inlet, self._stream_info, self._uid = inlet, full, info.uid()
        self._alarms.source = full.name()
        self.stream_id = writer.add_stream(self.header)

    @property
    def alive(self) -> bool:
        return self.running

    @property
    def reconnects(self) -> int:
        return self._reconnects

    # ------------------------------------------------------------------ InletReader hooks
    def _on_connect(self, full: pylsl.StreamInfo) -> None:
        self.header = StreamHeader.from_lsl(full)  # carries desc/channels, unlike the resolved info
        hdr = self.header
        self._numeric = hdr.channel_format != "string"
        self._max_n = max(64, int(hdr.nominal_srate * 0.5) + 64) if hdr.nominal_srate > 0 else 1024
        self._buf = (
            np.empty((self._max_n, hdr.channel_count), dtype=_NP_DTYPES[hdr.channel_format])
            if self._numeric
            else None
        )

    def _pull(self) -> bool:
        ts = self._pull_once(timeout=0.05)
        return bool(len(ts))

    def _pull_once(self, timeout: float):
        if self._numeric:
            _, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=self._max_n, dest_obj=self._buf)
            if len(ts):
                values, ts = self._buf[: len(ts)], np.asarray(ts)
                if self.header.nominal_srate > 0:  # a regular stream: its first samples may be deduced
                    settled = self._settle_start(values, ts, self.header.nominal_srate)
                    if settled is None:
                        return ts
                    values, ts = settled
                self._keep(values.T.copy(), ts)
        else:
            samples, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=self._max_n)
            if len(ts):
                self._keep(samples, np.asarray(ts))
        return ts

    def _keep(self, values, ts: np.ndarray) -> None:
        if self._reconnect_pending:
            self._reconnect_pending = False
            self._report_gap(float(ts[0]))
        with self._emit_lock:
            if self._numeric:
                self._pend_v.append(values)
            else:
                self._pend_v.extend(values)
            self._pend_t.append(ts)
        self._last_ts = float(ts[-1])

    def _on_idle(self, now: float) -> None:
        mono = time.monotonic()
        if mono - self._last_emit >= self.chunk_interval:
            self._emit()
        if mono >= self._next_offset:
            self._write_clock_offset()
            self._next_offset = mono + self.clock_offset_interval

    def _on_lost(self) -> None:
        self._emit()  # what came before the loss is on disk before anything else happens
        super()._on_lost()

    def _run(self) -> None:
        try:
            super()._run()
        except Exception as exc:  # a liblsl error must not take the session down
            self.error = f"recording of stream {self.name!r} stopped: {type(exc).__name__}: {exc}"
            logger.error(self.error)
            if self.on_error is not None:
                self.on_error(self.error)
        finally:
            self._emit()  # what was pulled before an error is kept too

    # ------------------------------------------------------------------ events
    def _report_gap(self, t_after: float) -> None:
        if self._last_ts is None:
            return
        srate = self.header.nominal_srate
        missing = max(0, round((t_after - self._last_ts) * srate) - 1) if srate > 0 else 0
        self.n_gaps += 1
        self.missing_samples += missing
        message = (
            f"gap in stream '{self.name}': {missing} samples missing between t={self._last_ts:.3f} and "
            f"t={t_after:.3f} ({t_after - self._last_ts:.2f} s)"
        )
        logger.warning(message)
        if self.on_event is not None:
            self.on_event("gap", message, {"stream": self.name, "t_before": self._last_ts,
                                           "t_after": t_after, "missing_samples": missing})  # fmt: skip

    def _on_alarm(self, alarm) -> None:
        if self.on_event is not None and (alarm.active or alarm.kind == "lost"):
            kind = alarm.kind if alarm.active else "returned"
            self.on_event(kind, alarm.message, {"stream": self.name, "t": alarm.time})

    # ------------------------------------------------------------------ writing
    def _emit(self) -> None:
        with self._emit_lock:
            self._last_emit = time.monotonic()
            if not self._pend_t:
                return
            values = np.concatenate(self._pend_v, axis=1) if self._numeric else self._pend_v
            stamps = np.concatenate(self._pend_t)
            self._pend_v, self._pend_t = [], []
        self.writer.write_samples(self.stream_id, values, stamps)
        self.n_samples += stamps.size
        self.n_chunks += 1

    def _write_clock_offset(self) -> None:
        try:
            offset = self._inlet.time_correction(timeout=1.0)
        except (LslTimeoutError, TimeoutError, LostError, RuntimeError):
            return  # no answer this time; the next measurement comes at the next interval
        now = pylsl.local_clock()
        # collection time in the sender's clock, as LabRecorder writes it (pyxdf expects that)
        self.writer.write_clock_offset(self.stream_id, now - offset, offset)

    def close(self) -> None:
        """Stop pulling, drain what liblsl already holds (non-blocking), write it and close the inlet."""
        self._stop.set()
        for t in self._threads():
            t.join(timeout=5.0)
        self._thread = None
        if self._inlet is not None:
            with contextlib.suppress(Exception):  # a lost inlet has nothing more to give
                while len(self._pull_once(timeout=0.0)):
                    pass
        self._emit()
        self._close_inlet()


class Recorder:
    """Record LSL streams (signals, markers) and in-process streams into one XDF recording.

    Parameters
    ----------
    path : str | Path
        Output file ``.xdf`` (with ``segment_seconds``: ``<stem>_001.xdf``, ``<stem>_002.xdf``...).
    segment_seconds : float | None
        Roll over to a new numbered, self-contained file after this many seconds.
    flush_interval : float
        Seconds between write + fsync + Boundary (at most 1 s: a crash loses at most that much).
    chunk_interval : float
        Most seconds samples wait in a stream thread before becoming a Samples chunk (at most 0.5 s).
    clock_offset_interval : float
        Seconds between ClockOffset measurements of each LSL stream (at most 5 s).
    on_alarm : callable(str) | None
        Called with a message when the recording stops on a write failure (disk full...) and when a recorded
        LSL stream is lost.
    events : bool
        Record a ``session-events`` marker stream (type ``Markers``, one JSON object per sample with ``kind``
        and ``message``): the recorder's own gaps, losses and reconnections, and whatever :meth:`event`
        is given (a session's node restarts, from the bus). pyxdf loads it like any marker stream.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        segment_seconds: float | None = None,
        flush_interval: float = 0.5,
        chunk_interval: float = 0.25,
        clock_offset_interval: float = 5.0,
        on_alarm: Callable[[str], None] | None = None,
        events: bool = True,
    ) -> None:
        if not 0 < chunk_interval <= 0.5:
            raise ValueError(f"chunk_interval must be in (0, 0.5] s, got {chunk_interval}")
        if not 0 < clock_offset_interval <= 5.0:
            raise ValueError(f"clock_offset_interval must be in (0, 5] s, got {clock_offset_interval}")
        self.path = Path(path)
        self.chunk_interval = chunk_interval
        self.clock_offset_interval = clock_offset_interval
        self._on_alarm = on_alarm
        self.writer = XdfWriter(
            path, segment_seconds=segment_seconds, flush_interval=flush_interval, on_alarm=self._alarm
        )
        self._lsl: list[_LslStreamRecorder] = []
        self._local: list[LocalStream] = []
        self._with_events = events
        self._events: LocalStream | None = None
        self.events: list[dict] = []  # every session event recorded, oldest first
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Recorder:
        """Open the file and start recording the streams added so far (more may be added later)."""
        if self._started:
            raise RuntimeError("Recorder.start() was already called")
        self.writer.open()
        self._started = True
        if self._with_events:
            self._events = self.add_local_stream(
                StreamHeader.local(SESSION_EVENTS_STREAM, "Markers", ["event"], 0.0, channel_format="string")
            )
        return self

    def stop(self) -> None:
        """Drain every stream, write StreamFooters and close the file. Idempotent; never raises."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        for rec in self._lsl:
            try:
                rec.close()
            except Exception:
                logger.exception("closing the inlet of %s failed", rec.name)
        for handle in self._local:
            self.writer.write_clock_offset(handle.stream_id, pylsl.local_clock(), 0.0)
        self.writer.close()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ streams
    def add_stream(
        self,
        name: str | None = None,
        *,
        stype: str | None = None,
        source_id: str | None = None,
        timeout: float = 10.0,
        recover: bool = True,
    ) -> str:
        """Find an LSL stream by name (and/or type, source id) and record it from now on.

        Blocks until the stream is found and its inlet is open, so samples pushed after this returns are
        recorded. Returns the stream's name. Raises ``LookupError`` when no such stream appears in
        ``timeout`` seconds and ``ValueError`` when several match (give ``source_id`` then).
        """
        self._require_running()
        props = {k: v for k, v in (("name", name), ("type", stype), ("source_id", source_id)) if v}
        if not props:
            raise ValueError("give at least one of name, stype, source_id to pick the stream to record")
        pred = " and ".join(f"{k}='{v}'" for k, v in props.items())
        found = _resolve(pred, timeout)
        if not found:
            raise LookupError(
                f"no LSL stream with {pred} appeared within {timeout:g} s; check that its outlet is running "
                "(`brainstream streams` lists what is visible) and the name is spelled exactly"
            )
        if len(found) > 1 and len({(i.source_id(), i.hostname()) for i in found}) > 1:
            ids = sorted({i.source_id() or "(none)" for i in found})
            raise ValueError(f"{len(found)} LSL streams match {pred} (source ids {ids}); pass source_id")
        rec = _LslStreamRecorder(
            found[0], self.writer, recover=recover, chunk_interval=self.chunk_interval,
            clock_offset_interval=self.clock_offset_interval, timeout=timeout, on_error=self._stream_alarm,
            on_event=self._stream_event,
        )  # fmt: skip
        with self._lock:
            self._lsl.append(rec)
        rec.start()
        return rec.name

    def add_local_stream(self, header: StreamHeader | pylsl.StreamInfo) -> LocalStream:
        """Record a stream whose samples this process pushes itself; returns the handle to push through."""
        self._require_running()
        if isinstance(header, pylsl.StreamInfo):
            header = StreamHeader.from_lsl(header)
        handle = LocalStream(self.writer, self.writer.add_stream(header), header)
        # in-process samples are already in this machine's clock: offset 0, stated so that readers
        # that synchronise clocks (pyxdf) treat every stream alike
        self.writer.write_clock_offset(handle.stream_id, pylsl.local_clock(), 0.0)
        with self._lock:
            self._local.append(handle)
        return handle

    def _require_running(self) -> None:
        if not self._started or self._stopped:
            raise RuntimeError("start the Recorder (or enter its `with` block) before adding streams")

    # ------------------------------------------------------------------ session events
    def event(self, kind: str, message: str, t: float | None = None, **fields) -> None:
        """Record one session event (``kind``: gap, lost, reconnected, alarm, restarting, ...) at LSL time
        ``t`` (default now) into the ``session-events`` stream. Never raises."""
        t = pylsl.local_clock() if t is None else float(t)
        entry = {"kind": str(kind), "message": str(message), "t": t, **fields}
        self.events.append(entry)
        if self._events is None:
            return
        try:
            self._events.push([json.dumps(entry, default=str, ensure_ascii=False)], [t])
        except Exception:  # the writer counts what it cannot write; an event must not stop the recording
            logger.exception("could not record session event %r", entry)

    def _stream_event(self, kind: str, message: str, fields: dict) -> None:
        t = fields.pop("t", None)
        if kind == "gap":
            t = fields.get("t_after")
        self.event(kind, message, t, source="recorder", **fields)
        if kind == "lost":
            self._stream_alarm(message)

    # ------------------------------------------------------------------ state
    def _alarm(self, msg: str) -> None:
        # the writer is off now: stop pulling (the inlets are closed by stop())
        for rec in self._lsl:
            rec._stop.set()
        self._stream_alarm(msg)

    def _stream_alarm(self, msg: str) -> None:
        # one stream lost: the others keep recording
        if self._on_alarm is not None:
            try:
                self._on_alarm(msg)
            except Exception:
                logger.exception("on_alarm callback failed")

    @property
    def paths(self) -> list[Path]:
        """Files written so far (one, or one per segment)."""
        return list(self.writer.paths)

    @property
    def alarms(self) -> list[str]:
        """Every alarm of the recording: write failures, streams lost (whether they came back or not) and
        streams that stopped on an error."""
        lost = [
            a.message for r in self._lsl for a in r.alarm_log if a.active and a.kind in ("lost", "mismatch")
        ]
        return list(self.writer.alarms) + lost + [r.error for r in self._lsl if r.error]

    @property
    def failed(self) -> bool:
        return self.writer.failed

    @property
    def stats(self) -> dict:
        streams = {
            r.name: {
                "samples": r.n_samples, "chunks": r.n_chunks, "alive": r.alive, "gaps": r.n_gaps,
                "missing_samples": r.missing_samples, "reconnects": r.reconnects,
            }
            for r in self._lsl
        }  # fmt: skip
        streams.update({h.header.name: {"samples": h.n_samples, "local": True} for h in self._local})
        return {"streams": streams, **self.writer.stats}


def _resolve(pred: str, timeout: float) -> list[pylsl.StreamInfo]:
    deadline = time.monotonic() + timeout
    while True:
        found = pylsl.resolve_bypred(pred, minimum=1, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        if found or time.monotonic() >= deadline:
            return list(found)
