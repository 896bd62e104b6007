"""RingBuffer: wrap-around, overwrite counting, time-range reads, concurrent use, random chunk sizes."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainstream.realtime.ringbuffer import ReadResult, RingBuffer


def _chunk(start: int, n: int, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose value encodes (absolute index, channel): data[c, i] = index * 10 + c."""
    idx = np.arange(start, start + n, dtype=np.float64)
    data = (idx[None, :] * 10 + np.arange(n_channels)[:, None]).astype(np.float32)
    return data, idx / 100.0


def _check_samples(data: np.ndarray, ts: np.ndarray, first_index: int) -> None:
    n_ch, n = data.shape
    expected, expected_ts = _chunk(first_index, n, n_ch)
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(ts, expected_ts)


def test_write_and_read_last_before_and_after_wrap():
    rb = RingBuffer(3, 10)
    assert rb.n_written == 0 and rb.last_timestamp is None
    data, ts = rb.read_last(5)
    assert data.shape == (3, 0) and ts.shape == (0,)

    rb.write(*_chunk(0, 4, 3))
    data, ts = rb.read_last(10)  # asks for more than held: returns what there is
    assert data.dtype == np.float32 and ts.dtype == np.float64
    _check_samples(data, ts, 0)

    rb.write(*_chunk(4, 9, 3))  # 13 written: wraps once
    assert rb.n_written == 13 and rb.n_available == 10
    data, ts = rb.read_last(10)
    _check_samples(data, ts, 3)
    data, ts = rb.read_last(4)
    _check_samples(data, ts, 9)
    assert rb.last_timestamp == pytest.approx(12 / 100.0)


def test_chunk_longer_than_capacity_keeps_tail_and_counts_all():
    rb = RingBuffer(2, 8)
    rb.write(*_chunk(0, 3, 2))
    rb.write(*_chunk(3, 20, 2))
    assert rb.n_written == 23
    data, ts = rb.read_last(8)
    _check_samples(data, ts, 15)
    res = rb.read_since(3)
    assert res.n_overwritten == 12 and res.cursor == 23
    _check_samples(res.data, res.timestamps, 15)


def test_read_since_counts_overwritten_samples():
    rb = RingBuffer(1, 5)
    rb.write(*_chunk(0, 3, 1))
    res = rb.read_since(0)
    assert isinstance(res, ReadResult)
    assert (res.cursor, res.n_overwritten) == (3, 0)
    _check_samples(res.data, res.timestamps, 0)

    res2 = rb.read_since(res.cursor)
    assert res2.data.shape == (1, 0) and res2.cursor == 3 and res2.n_overwritten == 0

    rb.write(*_chunk(3, 9, 1))  # 12 written, buffer holds 7..11; reader at 3 lost 3..6
    res3 = rb.read_since(res.cursor)
    assert (res3.cursor, res3.n_overwritten) == (12, 4)
    _check_samples(res3.data, res3.timestamps, 7)


def test_read_since_max_samples_continues():
    rb = RingBuffer(2, 50)
    rb.write(*_chunk(0, 30, 2))
    res = rb.read_since(0, max_samples=12)
    assert res.cursor == 12
    _check_samples(res.data, res.timestamps, 0)
    res = rb.read_since(res.cursor, max_samples=100)
    assert res.cursor == 30
    _check_samples(res.data, res.timestamps, 12)


def test_read_between_uses_timestamps_half_open():
    rb = RingBuffer(2, 20)
    rb.write(*_chunk(0, 35, 2))  # holds 15..34, timestamps index/100, wrapped
    data, ts = rb.read_between(0.18, 0.25)
    _check_samples(data, ts, 18)
    assert data.shape[1] == 7
    data, ts = rb.read_between(0.0, 0.16)  # partly older than the buffer: only what is held
    _check_samples(data, ts, 15)
    data, ts = rb.read_between(1.0, 2.0)
    assert data.shape == (2, 0)
    with pytest.raises(ValueError, match="t0 <= t1"):
        rb.read_between(0.3, 0.2)


def test_bad_arguments_have_clear_errors():
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(2, 0)
    with pytest.raises(ValueError, match="n_channels"):
        RingBuffer(0, 10)
    rb = RingBuffer(4, 10)
    with pytest.raises(ValueError, match=r"n_channels=4.*\.T"):
        rb.write(np.zeros((10, 4), np.float32), np.zeros(10))
    with pytest.raises(ValueError, match="timestamps"):
        rb.write(np.zeros((4, 10), np.float32), np.zeros(9))
    with pytest.raises(ValueError, match="capacity=10"):
        rb.read_last(11)
    with pytest.raises(ValueError, match="ahead"):
        rb.read_since(5)
    assert rb.n_written == 0  # nothing half-written


def test_write_accepts_transposed_pull_buffer_and_casts():
    rb = RingBuffer(3, 10, dtype=np.float32)
    pulled = np.arange(12, dtype=np.float64).reshape(4, 3)  # (times, channels) as pylsl fills it
    rb.write(pulled.T, np.arange(4.0))
    data, _ = rb.read_last(4)
    np.testing.assert_array_equal(data, pulled.T.astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 40),
    n_channels=st.integers(1, 4),
    chunks=st.lists(st.integers(0, 60), min_size=1, max_size=25),
    read_every=st.integers(1, 4),
)
def test_random_chunk_sizes_match_a_reference(capacity, n_channels, chunks, read_every):
    rb = RingBuffer(n_channels, capacity)
    total = 0
    cursor = 0
    received = 0
    lost = 0
    for i, n in enumerate(chunks):
        rb.write(*_chunk(total, n, n_channels))
        total += n
        assert rb.n_written == total
        held = min(total, capacity)
        want = min(held, max(1, n))
        data, ts = rb.read_last(want)
        _check_samples(data, ts, total - want)
        if i % read_every == 0:
            res = rb.read_since(cursor)
            expected_first = max(cursor, total - capacity)
            assert res.n_overwritten == expected_first - cursor
            _check_samples(res.data, res.timestamps, expected_first)
            received += res.data.shape[1]
            lost += res.n_overwritten
            cursor = res.cursor
    res = rb.read_since(cursor)
    received += res.data.shape[1]
    lost += res.n_overwritten
    assert received + lost == total  # every sample either delivered or reported lost, never both


def test_concurrent_reader_sees_only_intact_samples_and_counts_losses():
    """One writer thread laps a small buffer; readers must never see a torn or mixed sample."""
    n_channels, capacity, n_total = 256, 128, 200_000
    rb = RingBuffer(n_channels, capacity)
    errors: list[str] = []
    stop = threading.Event()
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 40, size=20_000)

    def writer() -> None:
        written = 0
        for n in sizes:
            n = int(min(n, n_total - written))
            if n <= 0:
                break
            rb.write(*_chunk(written, n, n_channels))
            written += n
        stop.set()

    totals = {"received": 0, "lost": 0}

    def cursor_reader() -> None:
        cursor = 0
        while True:
            done = stop.is_set()
            res = rb.read_since(cursor)
            n = res.data.shape[1]
            if n:
                first = res.cursor - n
                if first != cursor + res.n_overwritten:
                    errors.append(f"gap not reported: cursor {cursor}, first {first}")
                idx = res.timestamps * 100.0
                ok = np.array_equal(res.data, (np.rint(idx)[None, :] * 10 + np.arange(n_channels)[:, None]))
                if not ok or not np.array_equal(np.rint(idx), np.arange(first, res.cursor)):
                    errors.append(f"torn read at {first}")
            totals["received"] += n
            totals["lost"] += res.n_overwritten
            cursor = res.cursor
            if done and cursor == rb.n_written:
                return

    def last_reader() -> None:
        while not stop.is_set():
            data, ts = rb.read_last(32)
            if ts.size:
                idx = np.rint(ts * 100.0)
                if not np.array_equal(np.diff(idx), np.ones(ts.size - 1)):
                    errors.append("read_last not contiguous")
                if not np.array_equal(data[1], (idx * 10 + 1).astype(np.float32)):
                    errors.append("read_last torn")

    def oldest_reader() -> None:
        # reads the oldest held samples: exactly the region the writer overwrites next
        while not stop.is_set():
            res = rb.read_since(max(0, rb.n_written - capacity))
            n = res.data.shape[1]
            if n:
                idx = np.rint(res.timestamps * 100.0)
                if not np.array_equal(idx, np.arange(res.cursor - n, res.cursor)):
                    errors.append("oldest read not contiguous")
                elif not np.array_equal(res.data[-1], (idx * 10 + n_channels - 1).astype(np.float32)):
                    errors.append("oldest read torn")

    threads = [threading.Thread(target=f) for f in (writer, cursor_reader, last_reader, oldest_reader)]
    # switch threads every few bytecodes so the writer really interleaves with readers' copies
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(old_interval)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert rb.n_written == n_total
    assert totals["received"] + totals["lost"] == n_total


def test_wait_wakes_on_write_and_times_out():
    rb = RingBuffer(1, 10)
    assert rb.wait(0, timeout=0.01) is False
    woke = []
    t = threading.Thread(target=lambda: woke.append(rb.wait(0, timeout=5.0)))
    t.start()
    rb.write(*_chunk(0, 1, 1))
    t.join(timeout=5)
    assert woke == [True]
    assert rb.wait(0, timeout=0) is True


RESIDENT_PROBE = """
import numpy as np, psutil
from brainstream.realtime.ringbuffer import RingBuffer
proc = psutil.Process()
chunk = np.ones((64, 8192), np.float32)
before = proc.memory_info().rss
ring = RingBuffer(64, 16 * 8192)  # 32 MiB of float32
allocated = proc.memory_info().rss
for k in range(16):
    ring.write(chunk, np.arange(k * 8192, (k + 1) * 8192) / 1000.0)
filled = proc.memory_info().rss
print(ring.n_written == ring.capacity, allocated - before, filled - allocated)
"""


def test_the_ring_is_resident_from_the_start_so_filling_it_never_grows_the_process():
    """A session's memory must not seem to grow (or page-fault on the writer's path) while the ring fills.
    Measured in a fresh interpreter: a long-running one reuses pages it already holds."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", RESIDENT_PROBE], capture_output=True, text=True, check=True)
    full, allocated, filled = out.stdout.split()
    mib = 2**20
    assert full == "True"
    assert int(allocated) > 30 * mib, f"{int(allocated) / mib:.1f} MiB resident after allocation"
    assert int(filled) < 4 * mib, f"{int(filled) / mib:.1f} MiB more after filling"
