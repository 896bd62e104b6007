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

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl
from pylsl.util import TimeoutError as LslTimeoutError

from brainstream.realtime.recording.xdf_writer import StreamHeader, XdfWriter

logger = logging.getLogger(__name__)

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


class _LslStreamRecorder(threading.Thread):
    """Pull one LSL stream into the writer until stopped."""

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
    ) -> None:
        super().__init__(name=f"record-{info.name()}", daemon=True)
        self.writer = writer
        self.on_error = on_error
        self.chunk_interval = chunk_interval
        self.clock_offset_interval = clock_offset_interval
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.n_samples = 0
        self.n_chunks = 0
        self._pend_v: list = []
        self._pend_t: list[np.ndarray] = []
        self.inlet = pylsl.StreamInlet(info, max_buflen=360, recover=recover, processing_flags=0)
        full = self.inlet.info(timeout=timeout)  # carries desc/channels, unlike the resolved info
        self.header = StreamHeader.from_lsl(full)
        self.name = self.header.name
        self.inlet.open_stream(timeout=timeout)
        self.stream_id = writer.add_stream(self.header)
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a lost stream or a liblsl error must not take the session down
            self.error = f"recording of stream {self.name!r} stopped: {type(exc).__name__}: {exc}"
            logger.error(self.error)
            if self.on_error is not None:
                self.on_error(self.error)
        finally:
            self._emit()  # what was pulled before an error is kept too
            self.ready.set()

    def _emit(self) -> None:
        if not self._pend_t:
            return
        numeric = self.header.channel_format != "string"
        values = np.concatenate(self._pend_v, axis=1) if numeric else self._pend_v
        stamps = np.concatenate(self._pend_t)
        self._pend_v, self._pend_t = [], []
        self.writer.write_samples(self.stream_id, values, stamps)
        self.n_samples += stamps.size
        self.n_chunks += 1

    def _loop(self) -> None:
        hdr = self.header
        numeric = hdr.channel_format != "string"
        max_n = max(64, int(hdr.nominal_srate * 0.5) + 64) if hdr.nominal_srate > 0 else 1024
        buf = np.empty((max_n, hdr.channel_count), dtype=_NP_DTYPES[hdr.channel_format]) if numeric else None
        last_emit = time.monotonic()
        next_offset = 0.0
        self.ready.set()
        while True:
            stopping = self.stop_event.is_set()
            now = time.monotonic()
            if now >= next_offset:
                self._clock_offset()
                next_offset = now + self.clock_offset_interval
            # after stop: one last non-blocking drain of what liblsl already holds
            timeout = 0.0 if stopping else 0.05
            if numeric:
                _, ts = self.inlet.pull_chunk(timeout=timeout, max_samples=max_n, dest_obj=buf)
                if len(ts):
                    self._pend_v.append(buf[: len(ts)].T.copy())
                    self._pend_t.append(np.asarray(ts))
            else:
                samples, ts = self.inlet.pull_chunk(timeout=timeout, max_samples=max_n)
                if len(ts):
                    self._pend_v.extend(samples)
                    self._pend_t.append(np.asarray(ts))
            if stopping or time.monotonic() - last_emit >= self.chunk_interval:
                self._emit()
                last_emit = time.monotonic()
            if stopping and not len(ts):
                break

    def _clock_offset(self) -> None:
        try:
            offset = self.inlet.time_correction(timeout=1.0)
        except (LslTimeoutError, TimeoutError):
            return  # no answer this time; the next measurement comes at the next interval
        now = pylsl.local_clock()
        # collection time in the sender's clock, as LabRecorder writes it (pyxdf expects that)
        self.writer.write_clock_offset(self.stream_id, now - offset, offset)

    def close(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=5.0)
        self.inlet.close_stream()
        del self.inlet


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
        Called with a message when the recording stops on a write failure (disk full...).
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
        )  # fmt: skip
        with self._lock:
            self._lsl.append(rec)
        rec.start()
        rec.ready.wait(timeout)
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

    # ------------------------------------------------------------------ state
    def _alarm(self, msg: str) -> None:
        # the writer is off now: stop pulling (the inlets are closed by stop())
        for rec in self._lsl:
            rec.stop_event.set()
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
        return list(self.writer.alarms) + [r.error for r in self._lsl if r.error]

    @property
    def failed(self) -> bool:
        return self.writer.failed

    @property
    def stats(self) -> dict:
        streams = {
            r.name: {"samples": r.n_samples, "chunks": r.n_chunks, "alive": r.is_alive()} for r in self._lsl
        }
        streams.update({h.header.name: {"samples": h.n_samples, "local": True} for h in self._local})
        return {"streams": streams, **self.writer.stats}


def _resolve(pred: str, timeout: float) -> list[pylsl.StreamInfo]:
    deadline = time.monotonic() + timeout
    while True:
        found = pylsl.resolve_bypred(pred, minimum=1, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        if found or time.monotonic() >= deadline:
            return list(found)
