"""``brainstream bench ringbuffer``: cost of a 10-sample write and a 1 s read, against mne-lsl's buffer.

The baseline is the buffer update that mne-lsl's ``StreamLSL._acquire`` performs after each pull (read from
the installed mne-lsl and checked at run time): under a lock, ``np.roll`` the whole ``(n_samples,
n_channels)`` buffer and the timestamps by the chunk length, then copy the chunk into the tail. That costs
O(buffer) per chunk; ours costs O(chunk). Both run in the same process, on the same data, in this run.
Buffers are sized at 1000 Hz. A cross-check (printed, not in the JSON; ``--no-real`` skips it) times a real
``StreamLSL.acquire()`` and our ``StreamReader`` pull, each taking one chunk from a real outlet.
"""

from __future__ import annotations

import argparse
import inspect
import threading
import time
from collections.abc import Callable

import numpy as np

HELP = "ring buffer write/read cost vs mne-lsl's StreamLSL buffer update (64/306 ch, 5/60 s buffers)"

SFREQ = 1000.0  # buffer lengths are in seconds at this rate
CHUNK = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 306], help="channel counts (64 306)")
    parser.add_argument(
        "--buffer-s", type=float, nargs="+", default=[5.0, 60.0], help="buffer lengths (5 60)"
    )
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="seconds of timing per measurement repeat (default 0.2)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the median is reported (default 5)")
    parser.add_argument(
        "--no-real",
        action="store_true",
        help="skip the cross-check against a real StreamLSL reading a real outlet (printed, not in the JSON)",
    )


class _MneLslBuffer:
    """The buffer state and update of ``mne_lsl.stream.StreamLSL`` (``_acquire``, "roll and update")."""

    def __init__(self, n_channels: int, n_samples: int) -> None:
        self._buffer = np.zeros((n_samples, n_channels), dtype=np.float32)
        self._timestamps = np.zeros(n_samples, dtype=np.float64)
        self._lock = threading.Lock()
        self._n_new_samples = 0

    def update(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        # verbatim from StreamLSL._acquire (mne-lsl 1.x), after pull_chunk and the (here empty) filters
        data = data[-self._timestamps.size :, :]
        timestamps = timestamps[-self._timestamps.size :]
        with self._lock:
            self._buffer = np.roll(self._buffer, -timestamps.size, axis=0)
            self._timestamps = np.roll(self._timestamps, -timestamps.size, axis=0)
            self._buffer[-timestamps.size :, :] = data
            self._timestamps[-timestamps.size :] = timestamps
            self._n_new_samples += timestamps.size


def _mnelsl_source_check() -> str:
    """Which mne-lsl the baseline mirrors, and whether its update still rolls the buffer."""
    try:
        import mne_lsl
        from mne_lsl.stream import StreamLSL
    except ImportError:
        return "mne-lsl not installed (pip install -e .[dev]); baseline is the mne-lsl 1.x update replicated"
    src = inspect.getsource(StreamLSL._acquire)
    rolls = "np.roll(self._buffer" in src and "np.roll(self._timestamps" in src
    state = (
        "rolls its whole buffer per chunk (replicated here)" if rolls else "NO LONGER rolls: baseline stale"
    )
    return f"mne-lsl {mne_lsl.__version__}: StreamLSL._acquire {state}"


def _time_per_call(fn: Callable[[], None], min_time: float, repeats: int) -> float:
    """Median seconds per call over ``repeats`` batches, each at least ``min_time`` long."""
    fn()  # warm up (page in the buffer)
    n = 1
    while True:  # find a batch size that takes min_time
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 1 << 20:
            break
        n = max(n * 2, int(n * min_time / max(dt, 1e-9)))
    per_call = [dt / n]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per_call.append((time.perf_counter() - t0) / n)
    return float(np.median(per_call))


def _case(n_channels: int, buffer_s: float, min_time: float, repeats: int) -> dict:
    from brainstream.realtime.ringbuffer import RingBuffer

    n_samples = int(np.ceil(buffer_s * SFREQ))
    rng = np.random.default_rng(0)
    # a pulled chunk arrives (times, channels), as pylsl fills its destination array
    chunk = rng.standard_normal((CHUNK, n_channels)).astype(np.float32)
    ts = np.arange(CHUNK, dtype=np.float64) / SFREQ

    ours = RingBuffer(n_channels, n_samples)
    ours_write = _time_per_call(lambda: ours.write(chunk.T, ts), min_time, repeats)
    ours.write(np.zeros((n_channels, n_samples), np.float32), np.zeros(n_samples))  # full buffer
    n_read = int(SFREQ)
    ours_read = _time_per_call(lambda: ours.read_last(n_read), min_time, repeats)

    base = _MneLslBuffer(n_channels, n_samples)
    base_write = _time_per_call(lambda: base.update(chunk, ts), min_time, repeats)
    return {
        "channels": n_channels,
        "buffer_s": buffer_s,
        "ours_write_us": ours_write * 1e6,
        "mnelsl_write_us": base_write * 1e6,
        "ratio": base_write / ours_write,
        "ours_read_us": ours_read * 1e6,
    }


def _available(inlet) -> int:
    n = inlet.samples_available
    return int(n() if callable(n) else n)


def _real_acquire_case(n_channels: int, buffer_s: float, iters: int) -> tuple[float, float]:
    """Median seconds of one real ``StreamLSL.acquire()`` and of our ``StreamReader`` pull + write, each
    pulling one 10-sample chunk a real outlet has just pushed (no post-processing on either side)."""
    import uuid

    import pylsl
    from mne_lsl.stream import StreamLSL

    from brainstream.realtime.acquisition import StreamReader
    from brainstream.realtime.lsl_info import make_stream_info

    name = f"bench-rb-{uuid.uuid4().hex[:8]}"
    names = [f"ch{i}" for i in range(n_channels)]
    outlet = pylsl.StreamOutlet(make_stream_info(name, "EEG", names, SFREQ, source_id=name), chunk_size=CHUNK)
    chunk = np.random.default_rng(0).standard_normal((CHUNK, n_channels)).astype(np.float32)
    theirs = StreamLSL(bufsize=buffer_s, name=name, source_id=name).connect(acquisition_delay=None, timeout=5)
    ours = StreamReader(name=name, buffer_seconds=buffer_s, processing_flags=None).connect()

    pushed = [0]
    t_start = pylsl.local_clock()

    def timed(pull: Callable[[], object], inlet) -> float:
        # stamped at the nominal rate so neither reader sees (and reports) timestamp jumps
        pushed[0] += CHUNK
        outlet.push_chunk(chunk, t_start + pushed[0] / SFREQ)
        end = time.perf_counter() + 2.0
        while _available(inlet) < CHUNK and time.perf_counter() < end:
            time.sleep(0.0002)
        t0 = time.perf_counter()
        pull()
        return time.perf_counter() - t0

    try:
        outlet.wait_for_consumers(5.0)
        t_theirs = [timed(theirs.acquire, theirs._inlet) for _ in range(iters)]
        t_ours = [timed(ours._pull, ours._inlet) for _ in range(iters)]
    finally:
        theirs.disconnect()  # inlets close before the outlet goes
        ours.stop()
        outlet = None
    return float(np.median(t_theirs[2:])), float(np.median(t_ours[2:]))


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    note = _mnelsl_source_check()
    combos = [(c, b) for c in args.channels for b in args.buffer_s]
    cases = [
        _case(c, b, args.min_time, args.repeats)
        for c, b in tqdm(combos, desc="ringbuffer cases", unit="case", leave=False)
    ]
    print(f"write: one {CHUNK}-sample chunk; read: read_last({int(SFREQ)}) = 1 s at {SFREQ:g} Hz; float32")
    print(f"baseline: {note}")
    header = ("channels", "buffer_s", "ours_write_us", "mnelsl_write_us", "ratio", "ours_read_us")
    print("  ".join(f"{h:>15}" for h in header))
    for c in cases:
        print("  ".join(f"{c[h]:>15.4g}" for h in header))
    if not args.no_real and "not installed" not in note:
        print("cross-check, real liblsl outlet -> pull one 10-sample chunk -> buffer (median of 20):")
        print(f"{'channels':>8} {'buffer_s':>8} {'StreamLSL.acquire_us':>21} {'StreamReader_pull_us':>21}")
        for c, b in combos:
            theirs, ours = _real_acquire_case(c, b, iters=22)
            print(f"{c:>8} {b:>8g} {theirs * 1e6:>21.1f} {ours * 1e6:>21.1f}")
    return {"cases": cases}
