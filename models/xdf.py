"""XDF, the Lab Streaming Layer recording format: chunk constants, encoders and a tolerant reader.

The writer (``realtime.recording``) and the dataset loaders (``models.datasets``) share this module so that
both sides agree on every byte. The reader loads files that end in the middle of a chunk (a crash, a power
cut, a full disk): it keeps every complete chunk, salvages the complete samples of a cut Samples chunk, and
after any corrupt chunk scans forward to the next Boundary chunk, as the XDF specification intends.

Layout (XDF 1.0): ``XDF:`` then chunks ``[NumLengthBytes: 1|4|8][Length][Tag u16][StreamId u32 for tags
2, 3, 4, 6][content]``; Length counts the tag, the stream id and the content.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"XDF:"

TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6
TAGS_WITH_STREAM_ID = (TAG_STREAM_HEADER, TAG_SAMPLES, TAG_CLOCK_OFFSET, TAG_STREAM_FOOTER)
KNOWN_TAGS = (1, 2, 3, 4, 5, 6)

BOUNDARY_UUID = bytes(
    [0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4]
)

# XDF channel_format -> little-endian numpy dtype ("string" is handled apart)
NUMERIC_FORMATS: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "double64": np.dtype("<f8"),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
}
CHANNEL_FORMATS = (*NUMERIC_FORMATS, "string")

# A chunk longer than this is taken as corruption (a garbage length would otherwise swallow the file).
MAX_CHUNK_BYTES = 1 << 34


class XdfError(ValueError):
    """A file that is not XDF at all (the tolerant reader handles damaged XDF without raising)."""


# --------------------------------------------------------------------------------------------- encoding


def varlen_int(n: int) -> bytes:
    """XDF variable-length integer: one byte saying 1, 4 or 8, then the value little-endian."""
    if n < 0:
        raise ValueError(f"XDF lengths are non-negative, got {n}")
    if n < 256:
        return bytes((1, n))
    if n < 1 << 32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    """One complete chunk: length prefix, tag, stream id (for the tags that have one), content."""
    if tag in TAGS_WITH_STREAM_ID:
        if stream_id is None:
            raise ValueError(f"chunk tag {tag} needs a stream id")
        body = struct.pack("<HI", tag, stream_id) + content
    else:
        body = struct.pack("<H", tag) + content
    return varlen_int(len(body)) + body


def boundary_chunk() -> bytes:
    return chunk(TAG_BOUNDARY, BOUNDARY_UUID)


def clock_offset_chunk(stream_id: int, collection_time: float, offset: float) -> bytes:
    return chunk(TAG_CLOCK_OFFSET, struct.pack("<dd", collection_time, offset), stream_id)


def numeric_samples_chunk(stream_id: int, values: np.ndarray, timestamps: np.ndarray, fmt: str) -> bytes:
    """A Samples chunk for ``values`` (n_channels, n_samples), every sample with its full timestamp."""
    dtype = NUMERIC_FORMATS[fmt]
    values = np.asarray(values)
    timestamps = np.asarray(timestamps, dtype="<f8")
    n_ch, n = values.shape
    if timestamps.shape != (n,):
        raise ValueError(f"{n} samples but {timestamps.shape} timestamps")
    # a packed record per sample: [8][f64 timestamp][values]; numpy writes it in one vectorised pass
    rec = np.empty(n, dtype=np.dtype([("tsb", "u1"), ("ts", "<f8"), ("v", dtype, (n_ch,))]))
    rec["tsb"] = 8
    rec["ts"] = timestamps
    rec["v"] = values.T
    return chunk(TAG_SAMPLES, b"\x04" + struct.pack("<I", n) + rec.tobytes(), stream_id)


def string_samples_chunk(stream_id: int, values: Sequence[Sequence[str]], timestamps: np.ndarray) -> bytes:
    """A Samples chunk of a string stream; ``values[k]`` holds the channel strings of sample ``k``."""
    timestamps = np.asarray(timestamps, dtype="<f8")
    if len(values) != len(timestamps):
        raise ValueError(f"{len(values)} samples but {len(timestamps)} timestamps")
    parts = [b"\x04", struct.pack("<I", len(values))]
    for ts, sample in zip(timestamps, values, strict=True):
        parts.append(b"\x08" + struct.pack("<d", ts))
        for text in sample:
            raw = str(text).encode("utf-8")
            parts.append(varlen_int(len(raw)) + raw)
    return chunk(TAG_SAMPLES, b"".join(parts), stream_id)


def xml_bytes(root: ET.Element) -> bytes:
    return b'<?xml version="1.0"?>' + ET.tostring(root, encoding="utf-8")


def simple_xml(root_tag: str, fields: dict[str, object]) -> bytes:
    root = ET.Element(root_tag)
    for key, value in fields.items():
        ET.SubElement(root, key).text = str(value)
    return xml_bytes(root)


# --------------------------------------------------------------------------------------------- reading


@dataclass
class XdfStream:
    """One stream of an XDF file, arrays in MNE order ``(channels, times)``.

    ``data`` is a numeric array, or for string streams an object array of ``str``; ``timestamps`` are the
    recorded sample times plus the clock offsets when the reader was asked to synchronise them.
    """

    stream_id: int
    info_xml: str
    name: str
    type: str
    channel_count: int
    nominal_srate: float
    channel_format: str
    source_id: str
    ch_names: list[str]
    ch_types: list[str]
    ch_units: list[str]
    data: np.ndarray
    timestamps: np.ndarray
    clock_times: np.ndarray
    clock_values: np.ndarray
    footer: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.timestamps.size)

    @property
    def is_markers(self) -> bool:
        return self.channel_format == "string"

    @property
    def markers(self) -> list[str]:
        """First-channel strings of a string stream (a marker stream has one channel)."""
        if not self.is_markers:
            raise ValueError(f"stream {self.name!r} is {self.channel_format}, not a string marker stream")
        return [str(v) for v in self.data[0]] if self.data.shape[0] else []


@dataclass
class XdfFile:
    """What :func:`read_xdf` found: the streams, the file header and an account of any damage."""

    path: Path
    streams: list[XdfStream]
    file_header: dict[str, str]
    n_chunks: int
    n_boundaries: int
    n_corrupt: int
    truncated: bool
    problems: list[str]

    def stream(self, name: str) -> XdfStream:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(f"no stream named {name!r} in {self.path}; streams: {[s.name for s in self.streams]}")


@dataclass
class _Acc:
    """Per-stream accumulation while reading."""

    header: dict
    info_xml: str
    fmt: str
    n_ch: int
    srate: float
    values: list = field(default_factory=list)
    stamps: list = field(default_factory=list)
    clock_t: list = field(default_factory=list)
    clock_v: list = field(default_factory=list)
    last_ts: float = 0.0
    footer: dict = field(default_factory=dict)


class _TruncatedError(Exception):
    pass


def _take_varlen(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise _TruncatedError
    nb = buf[pos]
    if nb not in (1, 4, 8):
        raise ValueError(f"invalid variable-length integer width {nb}")
    end = pos + 1 + nb
    if end > len(buf):
        raise _TruncatedError
    return int.from_bytes(bytes(buf[pos + 1 : end]), "little"), end


def _parse_info(xml_text: str) -> dict:
    root = ET.fromstring(xml_text)
    info = {child.tag: (child.text or "") for child in root if len(child) == 0}
    names, types, units = [], [], []
    channels = root.find("desc/channels")
    if channels is not None:
        for ch in channels.findall("channel"):
            names.append(ch.findtext("label") or "")
            types.append(ch.findtext("type") or "")
            units.append(ch.findtext("unit") or "")
    info["_channels"] = (names, types, units)
    return info


def _parse_numeric(acc: _Acc, content: memoryview) -> int:
    """Append the samples of one Samples chunk; returns how many (a cut chunk gives its complete samples)."""
    n, pos = _take_varlen(content, 0)
    dtype = NUMERIC_FORMATS[acc.fmt]
    vbytes = acc.n_ch * dtype.itemsize
    rec_dtype = np.dtype([("tsb", "u1"), ("ts", "<f8"), ("v", dtype, (acc.n_ch,))])
    body = content[pos:]
    # fast path: every sample carries its 8-byte timestamp (what our writer and LabRecorder write)
    if len(body) == n * rec_dtype.itemsize:
        rec = np.frombuffer(body, dtype=rec_dtype, count=n)
        if n == 0 or np.all(rec["tsb"] == 8):
            if n:
                acc.values.append(rec["v"].T.copy())
                acc.stamps.append(rec["ts"].copy())
                acc.last_ts = float(rec["ts"][-1])
            return n
    stamps = np.empty(n)
    values = np.empty((acc.n_ch, n), dtype=dtype)
    tdiff = 1.0 / acc.srate if acc.srate > 0 else 0.0
    k, p = 0, 0
    while k < n:
        if p >= len(body):
            break
        if body[p] == 8:
            if p + 9 + vbytes > len(body):
                break
            ts = struct.unpack_from("<d", body, p + 1)[0]
            p += 9
        elif body[p] == 0:
            if p + 1 + vbytes > len(body):
                break
            ts = acc.last_ts + tdiff
            p += 1
        else:
            raise ValueError(f"invalid timestamp width {body[p]} in sample {k}")
        values[:, k] = np.frombuffer(body, dtype=dtype, count=acc.n_ch, offset=p)
        p += vbytes
        stamps[k] = ts
        acc.last_ts = ts
        k += 1
    if k:
        acc.values.append(values[:, :k])
        acc.stamps.append(stamps[:k])
    return k


def _parse_strings(acc: _Acc, content: memoryview) -> int:
    n, p = _take_varlen(content, 0)
    tdiff = 1.0 / acc.srate if acc.srate > 0 else 0.0
    samples: list[list[str]] = []
    stamps: list[float] = []
    try:
        for _ in range(n):
            if p >= len(content):
                raise _TruncatedError
            if content[p] == 8:
                if p + 9 > len(content):
                    raise _TruncatedError
                ts = struct.unpack_from("<d", content, p + 1)[0]
                p += 9
            elif content[p] == 0:
                ts, p = acc.last_ts + tdiff, p + 1
            else:
                raise ValueError(f"invalid timestamp width {content[p]}")
            sample = []
            for _ch in range(acc.n_ch):
                length, p = _take_varlen(content, p)
                if p + length > len(content):
                    raise _TruncatedError
                sample.append(bytes(content[p : p + length]).decode("utf-8", errors="replace"))
                p += length
            samples.append(sample)
            stamps.append(ts)
            acc.last_ts = ts
    except _TruncatedError:
        pass
    if samples:
        acc.values.append(np.array(samples, dtype=object).T.reshape(acc.n_ch, len(samples)))
        acc.stamps.append(np.asarray(stamps))
    return len(samples)


def parse_stream_header(xml_text: str) -> dict:
    """The flat fields of a StreamHeader's XML (``name``, ``type``, ``channel_count``, ``nominal_srate``,
    ``channel_format``, ``source_id``...) plus ``ch_names``, ``ch_types``, ``ch_units`` (desc/channels)."""
    info = _parse_info(xml_text)
    names, types, units = info.pop("_channels")
    return {**info, "ch_names": names, "ch_types": types, "ch_units": units}


def first_sample_timestamp(content: memoryview) -> float | None:
    """The explicit timestamp of a Samples chunk's first sample.

    None for a chunk without a complete first timestamp (no samples, or cut); ``ValueError`` when the
    first sample's time is deduced from the rate (it has no timestamp of its own).
    """
    try:
        n, pos = _take_varlen(content, 0)
    except _TruncatedError:
        return None
    if n == 0 or pos + 9 > len(content):
        return None
    if content[pos] != 8:
        raise ValueError("the first sample of a Samples chunk has no timestamp of its own")
    return struct.unpack_from("<d", content, pos + 1)[0]


def parse_samples_chunk(
    content: memoryview, channel_format: str, channel_count: int, nominal_srate: float, last_ts: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one Samples chunk's content: ``(values (n_channels, n), timestamps (n,))``.

    ``last_ts`` is the stream's previous timestamp, for samples whose timestamp is deduced from the rate.
    String streams give an object array of ``str``. A cut chunk gives its complete samples.
    """
    acc = _Acc({}, "", channel_format, channel_count, nominal_srate, last_ts=last_ts)
    with contextlib.suppress(_TruncatedError):
        (_parse_strings if channel_format == "string" else _parse_numeric)(acc, content)
    if not acc.values:
        dtype = object if channel_format == "string" else NUMERIC_FORMATS[channel_format]
        return np.empty((channel_count, 0), dtype=dtype), np.empty(0)
    return acc.values[0], acc.stamps[0]


def iter_chunks(
    data: bytes | mmap.mmap | memoryview,
) -> Iterator[tuple[int, int | None, memoryview, int] | str]:
    """Yield ``(tag, stream_id, content, offset)`` for each complete chunk after the magic bytes.

    Damage is reported in-line as a message string; the iterator then resumes after the next Boundary
    chunk (or stops at the end of the data). The last item for a cut file is the string ``"truncated"``.
    """
    mv = memoryview(data)
    pos = len(MAGIC)
    end = len(mv)
    while pos < end:
        start = pos
        have_length = False
        try:
            length, pos = _take_varlen(mv, pos)
            have_length = True
            if length < 2 or length > MAX_CHUNK_BYTES:
                raise ValueError(f"implausible chunk length {length}")
            if pos + length > end:
                raise _TruncatedError
            tag = int.from_bytes(bytes(mv[pos : pos + 2]), "little")
            if tag not in KNOWN_TAGS:
                raise ValueError(f"unknown chunk tag {tag}")
            body_start = pos + 2
            stream_id = None
            if tag in TAGS_WITH_STREAM_ID:
                if length < 6:
                    raise ValueError(f"chunk tag {tag} too short for a stream id")
                stream_id = int.from_bytes(bytes(mv[body_start : body_start + 4]), "little")
                body_start += 4
            if tag == TAG_BOUNDARY and bytes(mv[body_start : pos + length]) != BOUNDARY_UUID:
                raise ValueError("boundary chunk with a wrong signature")
            pos += length
            yield tag, stream_id, mv[body_start:pos], start
        except _TruncatedError:
            # a cut chunk; a last Samples chunk may still hold complete samples, so hand it over
            if have_length and pos + 2 <= end:
                tag = int.from_bytes(bytes(mv[pos : pos + 2]), "little")
                if tag == TAG_SAMPLES and pos + 6 <= end:
                    sid = int.from_bytes(bytes(mv[pos + 2 : pos + 6]), "little")
                    yield tag, sid, mv[pos + 6 : end], start
            yield "truncated"
            return
        except ValueError as exc:
            yield f"corrupt chunk at byte {start}: {exc}"
            finder = data.find if hasattr(data, "find") else bytes(mv).find
            found = finder(BOUNDARY_UUID, start + 1)
            if found < 0:
                return
            pos = found + len(BOUNDARY_UUID)


def read_xdf(
    path: str | Path, *, streams: Sequence[str] | None = None, synchronize_clocks: bool = True
) -> XdfFile:
    """Read an XDF file, tolerating truncation and corruption.

    Parameters
    ----------
    path : str | Path
        An ``.xdf`` file (for example one our recorder was writing when the machine died).
    streams : sequence of str | None
        Names of the streams to keep; all when None.
    synchronize_clocks : bool
        Add the recorded ClockOffset values to the timestamps (interpolated linearly between
        measurements), which puts every stream into the recording machine's clock, as pyxdf does.

    Returns
    -------
    XdfFile
        Streams in order of their headers; ``truncated``/``n_corrupt``/``problems`` describe any damage.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no XDF file at {path}")
    # mapped, not read: the file's pages stay in the page cache instead of a second copy on the heap
    with path.open("rb") as fh:
        if path.stat().st_size == 0:
            raise XdfError(f"{path} is empty, not an XDF file; expected an LSL recording")
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return parse_xdf(mapped, path=path, streams=streams, synchronize_clocks=synchronize_clocks)
    finally:
        # BufferError: a view is still referenced somewhere; the map is then freed with it
        with contextlib.suppress(BufferError):
            mapped.close()


def parse_xdf(
    raw: bytes | mmap.mmap,
    *,
    path: str | Path = "<bytes>",
    streams: Sequence[str] | None = None,
    synchronize_clocks: bool = True,
) -> XdfFile:
    """:func:`read_xdf` for the bytes of a file already in memory."""
    path = Path(path)
    if raw[: len(MAGIC)] != MAGIC:
        raise XdfError(
            f"{path} is not an XDF file (it does not start with 'XDF:'); expected an LSL recording"
        )
    accs: dict[int, _Acc] = {}
    file_header: dict[str, str] = {}
    problems: list[str] = []
    n_chunks = n_boundaries = n_corrupt = 0
    truncated = False
    for item in iter_chunks(raw):
        if isinstance(item, str):
            if item == "truncated":
                truncated = True
                problems.append(f"file ends inside a chunk (cut at byte {len(raw)})")
            else:
                n_corrupt += 1
                problems.append(item)
            continue
        tag, sid, content, offset = item
        n_chunks += 1
        try:
            if tag == TAG_FILE_HEADER:
                root = ET.fromstring(bytes(content))
                file_header = {c.tag: (c.text or "") for c in root}
            elif tag == TAG_STREAM_HEADER:
                text = bytes(content).decode("utf-8", errors="replace")
                info = _parse_info(text)
                fmt = info.get("channel_format", "")
                if fmt not in CHANNEL_FORMATS:
                    raise ValueError(f"unknown channel_format {fmt!r}")
                if sid in accs:
                    continue  # repeated header (a later segment of the same recording): keep the first
                accs[sid] = _Acc(
                    header=info,
                    info_xml=text,
                    fmt=fmt,
                    n_ch=int(info.get("channel_count", "0")),
                    srate=float(info.get("nominal_srate", "0") or 0),
                )
            elif tag == TAG_SAMPLES:
                if sid not in accs:
                    raise ValueError(f"samples for stream {sid} before its header")
                acc = accs[sid]
                if acc.fmt == "string":
                    _parse_strings(acc, content)
                else:
                    _parse_numeric(acc, content)
            elif tag == TAG_CLOCK_OFFSET and sid in accs:
                t, v = struct.unpack_from("<dd", content, 0)
                accs[sid].clock_t.append(t)
                accs[sid].clock_v.append(v)
            elif tag == TAG_STREAM_FOOTER and sid in accs:
                root = ET.fromstring(bytes(content))
                accs[sid].footer = {c.tag: (c.text or "") for c in root if len(c) == 0}
            elif tag == TAG_BOUNDARY:
                n_boundaries += 1
        except _TruncatedError:
            pass  # a cut last chunk without one complete sample; reported as truncation
        except (ValueError, ET.ParseError, struct.error) as exc:
            n_corrupt += 1
            problems.append(f"bad chunk (tag {tag}) at byte {offset}: {exc}")
    out = [_finish(sid, acc, synchronize_clocks) for sid, acc in accs.items()]
    if streams is not None:
        wanted = set(streams)
        out = [s for s in out if s.name in wanted]
    return XdfFile(path, out, file_header, n_chunks, n_boundaries, n_corrupt, truncated, problems)


def _finish(sid: int, acc: _Acc, synchronize_clocks: bool) -> XdfStream:
    info = acc.header
    names, types, units = info["_channels"]
    if len(names) != acc.n_ch:
        names = [str(i) for i in range(acc.n_ch)]
        types = [info.get("type", "")] * acc.n_ch
        units = [""] * acc.n_ch
    if acc.fmt == "string":
        data = np.concatenate(acc.values, axis=1) if acc.values else np.empty((acc.n_ch, 0), dtype=object)
    else:
        dtype = NUMERIC_FORMATS[acc.fmt]
        data = np.concatenate(acc.values, axis=1) if acc.values else np.empty((acc.n_ch, 0), dtype=dtype)
    stamps = np.concatenate(acc.stamps) if acc.stamps else np.empty(0)
    clock_t = np.asarray(acc.clock_t, dtype=float)
    clock_v = np.asarray(acc.clock_v, dtype=float)
    if synchronize_clocks and clock_t.size and stamps.size:
        order = np.argsort(clock_t)
        stamps = stamps + np.interp(stamps, clock_t[order], clock_v[order])
    return XdfStream(
        stream_id=sid,
        info_xml=acc.info_xml,
        name=info.get("name", ""),
        type=info.get("type", ""),
        channel_count=acc.n_ch,
        nominal_srate=acc.srate,
        channel_format=acc.fmt,
        source_id=info.get("source_id", ""),
        ch_names=list(names),
        ch_types=list(types),
        ch_units=list(units),
        data=data,
        timestamps=stamps,
        clock_times=clock_t,
        clock_values=clock_v,
        footer=acc.footer,
    )
