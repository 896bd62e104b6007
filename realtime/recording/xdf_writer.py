"""Incremental, crash-safe XDF writer.

Every chunk is encoded in memory and reaches the file through one ``os.write`` at each flush, so a process
killed at any moment leaves only whole chunks behind. Each flush is followed by ``os.fsync`` and then a
Boundary chunk: a Boundary in the file means that everything before it was on disk. A crash loses at most
the samples since the last flush (``flush_interval``, 0.5 s by default), a power cut at most those since
the last fsync.

A write that fails (disk full, quota, file-size limit, I/O error) never raises into the caller: the file
is cut back to its last complete chunk, the writer turns itself off, raises an alarm and keeps counting
what it had to drop. The session that owns it keeps running.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from brainstream.models import xdf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamHeader:
    """What an XDF StreamHeader chunk needs: the full LSL stream info XML plus its parsed essentials."""

    name: str
    type: str
    channel_count: int
    nominal_srate: float
    channel_format: str
    source_id: str
    xml: str

    @classmethod
    def from_lsl(cls, info) -> StreamHeader:
        """From a ``pylsl.StreamInfo`` (ideally ``inlet.info()``, which carries the full description)."""
        return cls.from_xml(info.as_xml())

    @classmethod
    def from_xml(cls, text: str) -> StreamHeader:
        root = ET.fromstring(text)
        fmt = root.findtext("channel_format", "")
        if fmt not in xdf.CHANNEL_FORMATS:
            raise ValueError(f"stream info has channel_format {fmt!r}; expected one of {xdf.CHANNEL_FORMATS}")
        return cls(
            name=root.findtext("name", ""),
            type=root.findtext("type", ""),
            channel_count=int(root.findtext("channel_count", "0")),
            nominal_srate=float(root.findtext("nominal_srate", "0") or 0),
            channel_format=fmt,
            source_id=root.findtext("source_id", ""),
            xml=text,
        )

    @classmethod
    def local(
        cls,
        name: str,
        stype: str,
        ch_names: Sequence[str],
        sfreq: float = 0.0,
        *,
        channel_format: str = "float32",
        ch_types: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        source_id: str = "",
    ) -> StreamHeader:
        """A header for an in-process stream (decoder outputs...), in the same layout as our LSL outlets."""
        from brainstream.realtime.lsl_info import make_stream_info

        info = make_stream_info(
            name, stype, ch_names, sfreq, ch_types=ch_types, units=units, source_id=source_id,
            channel_format=channel_format,
        )  # fmt: skip
        return cls.from_lsl(info)


@dataclass
class _StreamState:
    header: StreamHeader
    first_ts: float | None = None
    last_ts: float | None = None
    sample_count: int = 0
    offsets: list[tuple[float, float]] = field(default_factory=list)

    def reset_segment(self) -> None:
        self.first_ts = self.last_ts = None
        self.sample_count = 0
        self.offsets = []


class XdfWriter:
    """Write one recording as XDF, incrementally, into one file or numbered segment files.

    Parameters
    ----------
    path : str | Path
        Output ``.xdf``. With ``segment_seconds``, segments are ``<stem>_001.xdf``, ``<stem>_002.xdf``...
    segment_seconds : float | None
        Start a new, self-contained file (own FileHeader and StreamHeaders) after this many seconds.
    flush_interval : float
        Seconds between flushes (write + fsync + Boundary) by the background flusher; at most 1 s.
    fsync : bool
        Force data to disk at each flush (leave on; off only to measure what fsync costs).
    autoflush : bool
        Flush from a background thread every ``flush_interval``; off when the caller flushes itself.
    on_alarm : callable(str) | None
        Called once with a message when writing fails and the recording stops.

    Thread safety: ``add_stream``, ``write_samples`` and ``write_clock_offset`` may be called from any
    thread; they only append encoded chunks to a pending buffer.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        segment_seconds: float | None = None,
        flush_interval: float = 0.5,
        fsync: bool = True,
        autoflush: bool = True,
        on_alarm: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 < flush_interval <= 1.0:
            raise ValueError(
                f"flush_interval must be in (0, 1] s so a crash loses at most 1 s; got {flush_interval}"
            )
        if segment_seconds is not None and segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be positive or None, got {segment_seconds}")
        self.path = Path(path)
        if self.path.suffix.lower() != ".xdf":
            raise ValueError(f"recording file must end in .xdf, got {self.path.name!r}")
        self.segment_seconds = segment_seconds
        self.flush_interval = float(flush_interval)
        self.do_fsync = fsync
        self.autoflush = autoflush
        self.on_alarm = on_alarm
        self.paths: list[Path] = []
        self.alarms: list[str] = []
        self.failed = False
        self.closed = False
        self.bytes_written = 0
        self.bytes_dropped = 0
        self.n_flushes = 0
        self.fsync_seconds: deque[float] = deque(maxlen=100_000)
        self._streams: dict[int, _StreamState] = {}
        self._pending = bytearray()
        self._lock = threading.Lock()  # guards _pending and _streams
        self._io_lock = threading.Lock()  # serialises flushes and rollovers
        self._fd: int | None = None
        self._file_size = 0
        self._segment_start = 0.0
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> XdfWriter:
        """Create the first file and start the background flusher."""
        if self._fd is not None or self.closed:
            raise RuntimeError("an XdfWriter is opened once")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._io_lock:
            self._open_segment()
        self._flusher = threading.Thread(
            target=self._flush_loop, name=f"xdf-flush-{self.path.name}", daemon=True
        )
        self._flusher.start()
        return self

    def close(self) -> None:
        """Write StreamFooters, flush, fsync and close. Idempotent."""
        if self.closed:
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._io_lock:
            if self._fd is not None:
                self._write_footers()
                self._flush_locked()
                if self._fd is not None and self.do_fsync:
                    try:
                        os.fsync(self._fd)  # the closing Boundary too
                    except OSError:
                        logger.exception("final fsync of %s failed", self.current_path)
                self._close_fd()
        self.closed = True

    def __enter__(self) -> XdfWriter:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ content
    def add_stream(self, header: StreamHeader) -> int:
        """Register a stream and queue its StreamHeader; returns its XDF stream id (1, 2, ...)."""
        with self._lock:
            sid = len(self._streams) + 1
            self._streams[sid] = _StreamState(header)
            self._pending += xdf.chunk(xdf.TAG_STREAM_HEADER, header.xml.encode("utf-8"), sid)
        return sid

    def write_samples(self, stream_id: int, values, timestamps) -> None:
        """Queue one Samples chunk.

        ``values`` is ``(n_channels, n_samples)`` for numeric streams; for string streams a sequence of
        samples, each a sequence of ``n_channels`` strings (or one string for one-channel streams).
        """
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        n = timestamps.size
        if n == 0:
            return
        state = self._streams[stream_id]
        hdr = state.header
        if hdr.channel_format == "string":
            samples = [[s] if isinstance(s, str) else list(s) for s in values]
            if any(len(s) != hdr.channel_count for s in samples):
                raise ValueError(f"stream {hdr.name!r} has {hdr.channel_count} string channels per sample")
            data = xdf.string_samples_chunk(stream_id, samples, timestamps)
        else:
            values = np.asarray(values)
            if values.ndim == 1 and hdr.channel_count == 1:
                values = values[None, :]
            if values.shape != (hdr.channel_count, n):
                raise ValueError(
                    f"stream {hdr.name!r}: expected values of shape ({hdr.channel_count}, {n}) "
                    f"(channels, samples), got {values.shape}"
                )
            data = xdf.numeric_samples_chunk(stream_id, values, timestamps, hdr.channel_format)
        with self._lock:
            if self.failed or self.closed:
                self.bytes_dropped += len(data)
                return
            self._pending += data
            if state.first_ts is None:
                state.first_ts = float(timestamps[0])
            state.last_ts = float(timestamps[-1])
            state.sample_count += n

    def write_clock_offset(self, stream_id: int, collection_time: float, offset: float) -> None:
        """Queue a ClockOffset chunk (collection time in the sender's clock, as LabRecorder writes it)."""
        with self._lock:
            if self.failed or self.closed:
                return
            self._pending += xdf.clock_offset_chunk(stream_id, collection_time, offset)
            self._streams[stream_id].offsets.append((collection_time, offset))

    # ------------------------------------------------------------------ flushing
    def flush(self) -> None:
        """Write what is pending, fsync, then write a Boundary chunk; roll over to a new segment when due."""
        with self._io_lock:
            if self._fd is None:
                return
            self._flush_locked()
            if (
                self.segment_seconds is not None
                and self._fd is not None
                and time.monotonic() - self._segment_start >= self.segment_seconds
            ):
                self._rollover()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def _flush_locked(self) -> None:
        with self._lock:
            data, self._pending = bytes(self._pending), bytearray()
        if self._fd is None:
            self.bytes_dropped += len(data)
            return
        if data and not self._write(data):
            return
        if self.do_fsync:
            t0 = time.perf_counter()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc, 0)
                return
            self.fsync_seconds.append(time.perf_counter() - t0)
        self._write(xdf.boundary_chunk())
        self.n_flushes += 1

    def _write(self, data: bytes) -> bool:
        """Write all of ``data`` or, on failure, cut the file back to its last whole chunk and stop."""
        good = self._file_size
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0")
                view = view[n:]
                self._file_size += n
        except OSError as exc:
            self._fail(exc, len(view), cut_to=good)
            return False
        self.bytes_written += len(data)
        return True

    def _fail(self, exc: OSError, n_lost: int, cut_to: int | None = None) -> None:
        if cut_to is not None:
            try:
                os.ftruncate(self._fd, cut_to)  # shrinking needs no space
                self._file_size = cut_to
                os.fsync(self._fd)
            except OSError:
                logger.exception("could not cut %s back to its last whole chunk", self.current_path)
        name = errno.errorcode.get(exc.errno or 0, "error")
        hint = (
            "free disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "check the disk"
        )
        msg = (
            f"recording stopped: writing {self.current_path} failed ({name}: {exc.strerror}); the "
            f"{self._file_size} bytes already on disk are kept and load as XDF; {hint} and start a new "
            "recording"
        )
        with self._lock:
            self.failed = True
            self.bytes_dropped += n_lost + len(self._pending)
            self._pending = bytearray()
        self._close_fd()
        self.alarms.append(msg)
        logger.error(msg)
        if self.on_alarm is not None:
            try:
                self.on_alarm(msg)
            except Exception:
                logger.exception("on_alarm callback failed")

    # ------------------------------------------------------------------ segments
    @property
    def current_path(self) -> Path:
        return self.paths[-1] if self.paths else self.path

    def _segment_path(self, index: int) -> Path:
        if self.segment_seconds is None:
            return self.path
        return self.path.with_name(f"{self.path.stem}_{index:03d}{self.path.suffix}")

    def _open_segment(self) -> None:
        path = self._segment_path(len(self.paths) + 1)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._file_size = 0
        self.paths.append(path)
        self._fsync_dir(path.parent)
        self._segment_start = time.monotonic()
        created = datetime.now(timezone.utc).isoformat()
        head = xdf.MAGIC + xdf.chunk(
            xdf.TAG_FILE_HEADER,
            xdf.simple_xml("info", {"version": "1.0", "datetime": created, "writer": "brainstream"}),
        )
        with self._lock:
            for sid, state in self._streams.items():
                head += xdf.chunk(xdf.TAG_STREAM_HEADER, state.header.xml.encode("utf-8"), sid)
                state.reset_segment()
        if self._write(head):
            self._flush_locked()

    def _rollover(self) -> None:
        self._write_footers()
        self._flush_locked()
        if self._fd is None:
            return
        self._close_fd()
        try:
            self._open_segment()
        except OSError as exc:
            self._fail(exc, 0)

    def _write_footers(self) -> None:
        with self._lock:
            for sid, st in self._streams.items():
                root = ET.Element("info")
                ET.SubElement(root, "first_timestamp").text = repr(
                    st.first_ts if st.first_ts is not None else 0.0
                )
                ET.SubElement(root, "last_timestamp").text = repr(
                    st.last_ts if st.last_ts is not None else 0.0
                )
                ET.SubElement(root, "sample_count").text = str(st.sample_count)
                offsets = ET.SubElement(root, "clock_offsets")
                for t, v in st.offsets:
                    off = ET.SubElement(offsets, "offset")
                    ET.SubElement(off, "time").text = repr(t)
                    ET.SubElement(off, "value").text = repr(v)
                self._pending += xdf.chunk(xdf.TAG_STREAM_FOOTER, xdf.xml_bytes(root), sid)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                logger.exception("closing %s failed", self.current_path)
            self._fd = None

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        # the new file's directory entry must survive a power cut too
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reporting
    @property
    def stats(self) -> dict[str, float]:
        fs = np.asarray(self.fsync_seconds) if self.fsync_seconds else np.zeros(1)
        return {
            "bytes_written": self.bytes_written,
            "bytes_dropped": self.bytes_dropped,
            "flushes": self.n_flushes,
            "segments": len(self.paths),
            "fsync_ms_p50": float(np.percentile(fs, 50) * 1e3),
            "fsync_ms_p99": float(np.percentile(fs, 99) * 1e3),
            "failed": self.failed,
        }
