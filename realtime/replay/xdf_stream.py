"""Replay a large XDF file from disk, chunk by chunk, with memory that does not grow with the file.

pyxdf loads every stream whole (an hour of 272 channels at 1200 Hz is about 5 GB), so files above
:data:`STREAMING_THRESHOLD_BYTES` are replayed from an index instead: one pass over the memory-mapped file
(:func:`models.xdf.iter_chunks`, tolerant of truncation and corruption like our reader) notes where each
Samples chunk lies and the time of its first sample; blocks then decode only the chunks they need. Clock
offsets are applied as :func:`models.xdf.read_xdf` applies them (linear interpolation); timestamps are not
dejittered (they are replayed as recorded).
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainstream.models import xdf
from brainstream.realtime.replay.blocks import Block, StreamSpec, UnsupportedRecordingError

# files at least this large are streamed from disk instead of loaded with pyxdf
STREAMING_THRESHOLD_BYTES = 256 * 1024**2


class NeedsFullLoadError(UnsupportedRecordingError):
    """The file uses a feature the index cannot follow (samples without timestamps at a chunk start)."""


@dataclass
class _IndexedStream:
    sid: int
    header: dict
    offsets: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of each Samples content
    first_ts: list[float] = field(default_factory=list)
    clock_t: list[float] = field(default_factory=list)
    clock_v: list[float] = field(default_factory=list)

    @property
    def fmt(self) -> str:
        return self.header["channel_format"]

    @property
    def n_ch(self) -> int:
        return int(self.header["channel_count"])

    @property
    def srate(self) -> float:
        return float(self.header.get("nominal_srate") or 0)


class StreamingXdfSource:
    """Every stream of an XDF file read block by block from a memory map, times from the earliest sample.

    Same interface as :class:`realtime.replay.sources.XdfSource` (``streams``, ``duration``, ``blocks``,
    ``close``).
    """

    def __init__(
        self, path: str | Path, *, rename_first_signal: str | None = None, markers: bool = True
    ) -> None:
        self.path = Path(path)
        with self.path.open("rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[:4] != xdf.MAGIC:
            self.close()
            raise UnsupportedRecordingError(f"{path} is not an XDF file (no 'XDF:' at its start)")
        self.problems: list[str] = []
        indexed = self._index()
        self._streams = [s for s in indexed if s.offsets and (markers or s.fmt != "string")]
        if not self._streams:
            self.close()
            raise UnsupportedRecordingError(f"{path} holds no samples in any stream; nothing to replay")
        firsts = [self._decode(s, 0)[1][0] for s in self._streams]
        lasts = [self._decode(s, len(s.offsets) - 1)[1][-1] for s in self._streams]
        self.t_ref = min(firsts)
        # chunk start times relative to t_ref (clock-corrected), for bisecting to a block's chunks
        self._starts = [self._sync(s, np.asarray(s.first_ts)) - self.t_ref for s in self._streams]
        self.streams: list[StreamSpec] = []
        renamed = False
        for s in self._streams:
            h = s.header
            name = h.get("name", "")
            if rename_first_signal and not renamed and s.fmt != "string" and s.srate > 0:
                name, renamed = rename_first_signal, True
            labels, types, units = h["ch_names"], h["ch_types"], h["ch_units"]
            if len(labels) != s.n_ch:
                labels, types, units = (
                    [str(i) for i in range(s.n_ch)],
                    [h.get("type", "")] * s.n_ch,
                    [""] * s.n_ch,
                )
            self.streams.append(
                StreamSpec(name, h.get("type", ""), tuple(labels), s.srate, s.fmt, tuple(types), tuple(units),
                           h.get("source_id", ""))
            )  # fmt: skip
        rates = [s.srate for s in self._streams if s.srate > 0]
        self.duration = max(lasts) - self.t_ref + (1.0 / max(rates) if rates else 0.0)
        self.sfreq = max(rates, default=0.0)
        self.has_markers = any(s.fmt == "string" for s in self._streams)

    # ------------------------------------------------------------------ index
    def _index(self) -> list[_IndexedStream]:
        streams: dict[int, _IndexedStream] = {}
        chunks = xdf.iter_chunks(self._map)
        try:
            for item in chunks:
                if isinstance(item, str):
                    self.problems.append(item)
                else:
                    self._index_chunk(streams, *item)
                del item
        finally:
            chunks.close()  # releases its view of the map
        out = list(streams.values())
        for s in out:
            if s.first_ts != sorted(s.first_ts):
                order = np.argsort(s.first_ts, kind="stable")
                s.offsets = [s.offsets[i] for i in order]
                s.first_ts = [s.first_ts[i] for i in order]
        return out

    def _index_chunk(
        self, streams: dict, tag: int, sid: int | None, content: memoryview, chunk_start: int
    ) -> None:
        if tag == xdf.TAG_STREAM_HEADER and sid not in streams:
            header = xdf.parse_stream_header(bytes(content).decode("utf-8", errors="replace"))
            if header.get("channel_format") not in xdf.CHANNEL_FORMATS:
                self.problems.append(f"stream {sid}: unknown channel_format; skipped")
                return
            streams[sid] = _IndexedStream(sid, header)
        elif tag == xdf.TAG_SAMPLES and sid in streams:
            try:
                t = xdf.first_sample_timestamp(content)
            except ValueError as exc:
                raise NeedsFullLoadError(f"{self.path}: {exc}") from None
            if t is None:
                return
            # content follows [width byte][length][tag u16][stream id u32]
            start = chunk_start + 1 + self._map[chunk_start] + 2 + 4
            streams[sid].offsets.append((start, start + len(content)))
            streams[sid].first_ts.append(t)
        elif tag == xdf.TAG_CLOCK_OFFSET and sid in streams:
            t, v = struct.unpack_from("<dd", content, 0)
            streams[sid].clock_t.append(t)
            streams[sid].clock_v.append(v)

    def _sync(self, s: _IndexedStream, times: np.ndarray) -> np.ndarray:
        if not s.clock_t or times.size == 0:
            return times
        order = np.argsort(s.clock_t)
        return times + np.interp(times, np.asarray(s.clock_t)[order], np.asarray(s.clock_v)[order])

    def _decode(self, s: _IndexedStream, k: int) -> tuple[np.ndarray | list, np.ndarray]:
        a, b = s.offsets[k]
        with memoryview(self._map) as mv, mv[a:b] as content:
            values, stamps = xdf.parse_samples_chunk(content, s.fmt, s.n_ch, s.srate)
        stamps = self._sync(s, stamps)
        if s.fmt == "string":
            return [list(col) for col in values.T], stamps
        return values, stamps

    # ------------------------------------------------------------------ blocks
    def blocks(self, start: float, stop: float, block_s: float = 1.0) -> Iterator[Block]:
        cursors = [_Cursor(self, i, start) for i in range(len(self._streams))]
        t = start
        while t < stop:
            t1 = min(t + block_s, stop)
            values, times = [], []
            for c in cursors:
                v, ts = c.take_until(t1)
                values.append(v)
                times.append(ts)
            yield Block(t, t1, values, times)
            t = t1

    def close(self) -> None:
        if not self._map.closed:
            with contextlib.suppress(BufferError):  # a block still referencing the map frees it later
                self._map.close()


class _Cursor:
    """Walks one stream's chunks forward in time, decoding each chunk once."""

    def __init__(self, src: StreamingXdfSource, i: int, start: float) -> None:
        self.src, self.stream, self.starts = src, src._streams[i], src._starts[i]
        self.k = max(0, int(np.searchsorted(self.starts, start, side="right")) - 1)
        self._load()
        self.pos = int(np.searchsorted(self.times, start, side="left"))

    def _load(self) -> None:
        values, stamps = self.src._decode(self.stream, self.k)
        self.values, self.times, self.pos = values, stamps - self.src.t_ref, 0

    def take_until(self, t1: float) -> tuple[np.ndarray | list, np.ndarray]:
        parts_v: list = []
        parts_t: list[np.ndarray] = []
        while True:
            end = int(np.searchsorted(self.times, t1, side="left"))
            if end > self.pos:
                parts_v.append(self.values[self.pos : end] if isinstance(self.values, list) else
                               self.values[:, self.pos : end])  # fmt: skip
                parts_t.append(self.times[self.pos : end])
                self.pos = end
            if self.pos < len(self.times) or self.k + 1 >= len(self.stream.offsets):
                break
            if self.starts[self.k + 1] >= t1:
                break
            self.k += 1
            self._load()
        if self.stream.fmt == "string":
            flat_v = [v for p in parts_v for v in p]
            flat_t = np.concatenate(parts_t) if parts_t else np.empty(0)
            return flat_v, flat_t
        if not parts_v:
            return np.empty((self.stream.n_ch, 0), dtype=xdf.NUMERIC_FORMATS[self.stream.fmt]), np.empty(0)
        return np.concatenate(parts_v, axis=1), np.concatenate(parts_t)
