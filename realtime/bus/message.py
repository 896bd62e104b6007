"""Wire format of the bus (docs/architecture.md §3): ``[topic, header, payload...]``.

``header`` is a msgpack map (never pickle) with ``v, seq, src, t_sample, trace, space, frames`` plus small
extras; each payload frame is the raw C-contiguous bytes of one numpy array, described by
``frames[i] = {"dtype": "<f4", "shape": [...]}``. Every received message is validated before a single array is
built from it: frame count, dtype (plain numeric types only), shape and byte size must agree, otherwise
:class:`MalformedMessageError` says which rule was broken (receivers drop and count it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

SCHEMA_VERSION = 1
#: header keys owned by the bus; extras may not reuse them
RESERVED_KEYS = frozenset({"v", "seq", "src", "t_sample", "trace", "space", "frames"})
MAX_FRAMES = 16
MAX_NDIM = 8
MAX_HEADER_BYTES = 1 << 20
#: plain numeric dtypes only, little-endian or byte-order free; no object, string or structured types
ALLOWED_DTYPES = frozenset(
    np.dtype(t).newbyteorder("<").str
    for t in (
        "b1",
        "i1",
        "u1",
        "i2",
        "u2",
        "i4",
        "u4",
        "i8",
        "u8",
        "f2",
        "f4",
        "f8",
        "c8",
        "c16",
    )
)
#: suffix of heartbeat topics: ``status.<publisher name>.heartbeat``
HEARTBEAT_SUFFIX = ".heartbeat"


class MalformedMessageError(ValueError):
    """A received message broke the wire format; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class BusMessage:
    """One message off the bus.

    Parameters
    ----------
    topic : str
        Dotted ASCII topic, e.g. ``embedding.sub-01``.
    header : dict
        The decoded msgpack header (bus keys and extras).
    arrays : list of numpy.ndarray
        Payload arrays. Received arrays are read-only views on the message buffers (zero-copy);
        ``np.array(a)`` gives a writable copy.
    """

    topic: str
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def src(self) -> str:
        return str(self.header["src"])

    @property
    def t_sample(self) -> float | None:
        return self.header.get("t_sample")

    @property
    def trace(self) -> list[list[Any]]:
        """``[[stage, t], ...]`` as a new list, so a stage can extend it and pass it on."""
        return [list(item) for item in self.header.get("trace", [])]

    @property
    def space(self) -> str | None:
        return self.header.get("space")

    @property
    def extras(self) -> dict[str, Any]:
        """Header entries beyond the bus's own keys (``event``, ``image_id``, ``ids``, ...)."""
        return {k: v for k, v in self.header.items() if k not in RESERVED_KEYS}

    @property
    def is_heartbeat(self) -> bool:
        return bool(self.header.get("heartbeat")) and self.topic.endswith(HEARTBEAT_SUFFIX)

    def get(self, key: str, default: Any = None) -> Any:
        """One header entry (extras included)."""
        return self.header.get(key, default)


def _msgpack_default(obj: Any) -> Any:
    # numpy scalars and small arrays in extras (scores, ids) become plain msgpack values
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot put a {type(obj).__name__} in a bus header; use numbers, strings, lists, dicts")


def _as_wire_array(array: Any, index: int) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype.newbyteorder("<").str not in ALLOWED_DTYPES:
        raise TypeError(
            f"payload array {index} has dtype {arr.dtype}; the bus carries plain numeric arrays only "
            "(bool, int, uint, float, complex); put strings in header extras"
        )
    if arr.ndim > MAX_NDIM:
        raise ValueError(f"payload array {index} has {arr.ndim} dimensions; at most {MAX_NDIM} are allowed")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def encode(
    topic: str,
    arrays: Sequence[Any],
    *,
    seq: int,
    src: str,
    t_sample: float | None = None,
    trace: Sequence[Sequence[Any]] | None = None,
    space: str | None = None,
    extras: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Build the frames of one message; payload frames are the arrays themselves (zero-copy).

    Raises
    ------
    ValueError, TypeError
        On a bad topic, a reserved extra key, an unsupported dtype or an extra msgpack cannot carry.
    """
    if not topic or not topic.isascii() or any(c.isspace() for c in topic):
        raise ValueError(
            f"topic must be non-empty ASCII without spaces, e.g. 'embedding.sub-01'; got {topic!r}"
        )
    if len(arrays) > MAX_FRAMES:
        raise ValueError(f"at most {MAX_FRAMES} payload arrays per message; got {len(arrays)}")
    extras = dict(extras or {})
    clash = RESERVED_KEYS.intersection(extras)
    if clash:
        raise ValueError(f"header extras may not use the bus's own keys {sorted(clash)}")
    wire = [_as_wire_array(a, i) for i, a in enumerate(arrays)]
    header = {
        "v": SCHEMA_VERSION,
        "seq": int(seq),
        "src": src,
        "t_sample": None if t_sample is None else float(t_sample),
        "trace": [[str(stage), float(t)] for stage, t in (trace or ())],
        "space": space,
        "frames": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in wire],
        **extras,
    }
    packed = msgpack.packb(header, default=_msgpack_default, use_bin_type=True)
    if len(packed) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(packed)} bytes; keep extras small (< {MAX_HEADER_BYTES} bytes)")
    return [topic.encode("ascii"), packed, *wire]


def _buffer(frame: Any) -> memoryview:
    # zmq.Frame (copy=False receive) exposes .buffer; bytes / memoryview are used directly
    buf = getattr(frame, "buffer", frame)
    return memoryview(buf).cast("B")


def _check_header(header: Any, n_payload: int) -> None:
    if not isinstance(header, dict):
        raise MalformedMessageError("bad_header", f"header is a {type(header).__name__}, not a map")
    if header.get("v") != SCHEMA_VERSION:
        raise MalformedMessageError(
            "bad_version", f"schema version {header.get('v')!r}, expected {SCHEMA_VERSION}"
        )
    seq = header.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MalformedMessageError("bad_header", f"seq must be a non-negative int, got {seq!r}")
    src = header.get("src")
    if not isinstance(src, str) or not src:
        raise MalformedMessageError("bad_header", f"src must be a non-empty string, got {src!r}")
    t_sample = header.get("t_sample")
    if t_sample is not None and (not isinstance(t_sample, int | float) or not math.isfinite(t_sample)):
        raise MalformedMessageError(
            "bad_header", f"t_sample must be a finite number or nil, got {t_sample!r}"
        )
    trace = header.get("trace", [])
    if not isinstance(trace, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int | float)
        for item in trace
    ):
        raise MalformedMessageError("bad_header", "trace must be a list of [stage, time] pairs")
    space = header.get("space")
    if space is not None and not isinstance(space, str):
        raise MalformedMessageError("bad_header", f"space must be a string or nil, got {space!r}")
    frames = header.get("frames")
    if not isinstance(frames, list):
        raise MalformedMessageError("bad_header", "frames must be a list of {dtype, shape}")
    if len(frames) != n_payload:
        raise MalformedMessageError(
            "frame_count", f"header describes {len(frames)} payload frames, message has {n_payload}"
        )


def _array_from(desc: Any, frame: Any, index: int) -> np.ndarray:
    if not isinstance(desc, dict):
        raise MalformedMessageError("bad_header", f"frame {index} description is not a map")
    dtype_str, shape = desc.get("dtype"), desc.get("shape")
    if not isinstance(dtype_str, str) or dtype_str not in ALLOWED_DTYPES:
        raise MalformedMessageError(
            "bad_dtype", f"frame {index} dtype {dtype_str!r} is not a plain numeric dtype"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise MalformedMessageError("bad_shape", f"frame {index} shape {shape!r} is not a list of sizes")
    dtype = np.dtype(dtype_str)
    expected = math.prod(shape) * dtype.itemsize
    buf = _buffer(frame)
    if buf.nbytes != expected:
        raise MalformedMessageError(
            "frame_size",
            f"frame {index}: {buf.nbytes} bytes for {dtype_str}{tuple(shape)} ({expected} expected)",
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def decode(frames: Sequence[Any]) -> BusMessage:
    """Validate and decode one received multipart message.

    Raises
    ------
    MalformedMessageError
        With ``reason`` one of ``too_few_frames, too_many_frames, bad_topic, bad_header, bad_version,
        frame_count, bad_dtype, bad_shape, frame_size``.
    """
    if len(frames) < 2:
        raise MalformedMessageError(
            "too_few_frames", f"{len(frames)} frame(s); at least topic and header expected"
        )
    if len(frames) > MAX_FRAMES + 2:
        raise MalformedMessageError(
            "too_many_frames", f"{len(frames)} frames; at most {MAX_FRAMES + 2} allowed"
        )
    try:
        topic = _buffer(frames[0]).tobytes().decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMessageError("bad_topic", "topic is not ASCII") from None
    if not topic:
        raise MalformedMessageError("bad_topic", "empty topic")
    raw_header = _buffer(frames[1])
    if raw_header.nbytes > MAX_HEADER_BYTES:
        raise MalformedMessageError("bad_header", f"header of {raw_header.nbytes} bytes is too large")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage  # noqa: BLE001
        raise MalformedMessageError("bad_header", f"not a msgpack map ({type(exc).__name__})") from None
    _check_header(header, len(frames) - 2)
    arrays = [
        _array_from(desc, frame, i)
        for i, (desc, frame) in enumerate(zip(header["frames"], frames[2:], strict=True))
    ]
    return BusMessage(topic=topic, header=header, arrays=arrays)
