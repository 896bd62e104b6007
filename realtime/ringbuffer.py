"""A preallocated ring buffer of ``(channels, times)`` samples with LSL timestamps.

One writer thread, any number of reader threads. Writing costs O(chunk) (at most two slice copies, no
``np.roll``, no reallocation) and reading costs O(window). Readers never block the writer: the writer
announces the region it is about to overwrite (``_reserved``) before copying and publishes the new count
(``_n_written``) after; a reader copies first and then drops whatever the writer may have touched meanwhile
(a sequence lock). So a read returns only samples that were intact for the whole copy, and cursor reads
report how many samples the reader lost to overwriting.

Samples are addressed by their absolute index ``0 .. n_written - 1``; the buffer holds the last
``capacity`` of them.

Memory is time-major, ``(capacity, n_channels)``, like the ``(times, channels)`` chunks pylsl pulls, so a
write is one contiguous block copy whatever the channel count (a channel-major write would touch one cache
line per channel). Reads return ``(n_channels, n)`` as the transpose of a fresh time-major copy: a
Fortran-ordered array; call ``np.ascontiguousarray`` where C order matters (ZeroMQ frames, ctypes).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

_MAX_READ_RETRIES = 8


class ReadResult(NamedTuple):
    """What :meth:`RingBuffer.read_since` returns.

    Attributes
    ----------
    data : array, shape (n_channels, n)
        The samples from the cursor (or the oldest still held) up to the newest.
    timestamps : array, shape (n,)
        Their LSL timestamps (float64).
    cursor : int
        Pass this to the next ``read_since`` call: absolute index one past the last sample returned.
    n_overwritten : int
        Samples between the old cursor and the first returned one that were overwritten before this read.
    """

    data: np.ndarray
    timestamps: np.ndarray
    cursor: int
    n_overwritten: int


class RingBuffer:
    """A fixed-capacity ring buffer of multichannel samples and their timestamps.

    Parameters
    ----------
    n_channels : int
        Number of channels (rows).
    capacity : int
        Number of samples held; older samples are overwritten.
    dtype : numpy dtype
        Sample type of the stored data (float32 by default). Timestamps are always float64.

    Notes
    -----
    Exactly one thread may call :meth:`write`. Any thread may read. ``read_between`` assumes timestamps
    written are non-decreasing (LSL timestamps after dejittering are).
    """

    def __init__(self, n_channels: int, capacity: int, dtype: np.dtype | type = np.float32) -> None:
        n_channels = int(n_channels)
        capacity = int(capacity)
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity}")
        self._n_channels = n_channels
        self._capacity = capacity
        self._data = np.zeros((capacity, n_channels), dtype=dtype)
        self._ts = np.zeros(capacity, dtype=np.float64)
        # np.zeros maps zero pages lazily: without this, the first pass through the ring would page-fault
        # on the writer's hot path and the process's memory would seem to grow until the ring is full
        self._data.fill(0)
        self._ts.fill(0.0)
        # absolute index one past the newest complete sample (published after the copy)
        self._n_written = 0
        # absolute index one past the newest sample the writer may be touching (published before the copy)
        self._reserved = 0
        self._cond = threading.Condition(threading.Lock())
        self._n_waiting = 0

    # ------------------------------------------------------------------ properties
    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self._n_channels

    @property
    def capacity(self) -> int:
        """Number of samples the buffer holds."""
        return self._capacity

    @property
    def dtype(self) -> np.dtype:
        """Sample dtype of the stored data."""
        return self._data.dtype

    @property
    def n_written(self) -> int:
        """Samples written since creation (monotonic); also the cursor of "now"."""
        return self._n_written

    @property
    def n_available(self) -> int:
        """Samples currently held: ``min(n_written, capacity)``."""
        return min(self._n_written, self._capacity)

    @property
    def last_timestamp(self) -> float | None:
        """Timestamp of the newest sample, or None before the first write."""
        n = self._n_written
        if n == 0:
            return None
        return float(self._ts[(n - 1) % self._capacity])

    def __len__(self) -> int:
        return self.n_available

    def __repr__(self) -> str:
        return (
            f"<RingBuffer {self._n_channels} ch x {self._capacity} samples, {self.dtype}, "
            f"{self._n_written} written>"
        )

    # ------------------------------------------------------------------ writing
    def write(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Append a chunk.

        Parameters
        ----------
        data : array, shape (n_channels, n)
            Samples, any layout (a transposed ``(n, n_channels)`` pull buffer is fine); cast to the buffer's
            dtype while copying.
        timestamps : array, shape (n,)
            LSL timestamps of the samples.

        Notes
        -----
        A chunk longer than the capacity keeps only its last ``capacity`` samples, but ``n_written`` grows by
        the full length, so cursor readers see the loss as overwritten samples.
        """
        if data.ndim != 2 or data.shape[0] != self._n_channels:
            raise ValueError(
                f"data must have shape (n_channels={self._n_channels}, n_times), got {data.shape}; "
                "transpose a (times, channels) LSL chunk with .T"
            )
        n = data.shape[1]
        if timestamps.shape != (n,):
            raise ValueError(f"timestamps must have shape ({n},) to match data, got {timestamps.shape}")
        if n == 0:
            return
        cap = self._capacity
        start = self._n_written
        src = data.T  # (n, n_channels): contiguous when data is a transposed pull buffer
        if n > cap:
            src = src[n - cap :]
            timestamps = timestamps[n - cap :]
        m = src.shape[0]
        first = start + n - m  # absolute index of the first sample actually stored
        self._reserved = start + n  # announce before touching memory (readers check it after copying)
        i0 = first % cap
        k = cap - i0
        if m <= k:
            self._data[i0 : i0 + m] = src
            self._ts[i0 : i0 + m] = timestamps
        else:
            self._data[i0:] = src[:k]
            self._ts[i0:] = timestamps[:k]
            self._data[: m - k] = src[k:]
            self._ts[: m - k] = timestamps[k:]
        self._n_written = start + n
        if self._n_waiting:
            with self._cond:
                self._cond.notify_all()

    # ------------------------------------------------------------------ reading
    def _copy_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Copy absolute samples ``[start, stop)``; return (data, ts, first) keeping only intact samples.

        ``first`` is the absolute index of the first returned sample (>= start when the writer overwrote the
        head of the range during the copy).
        """
        cap = self._capacity
        n = stop - start
        i0 = start % cap
        if i0 + n <= cap:
            data = self._data[i0 : i0 + n].copy()
            ts = self._ts[i0 : i0 + n].copy()
        else:
            k = cap - i0
            data = np.concatenate((self._data[i0:], self._data[: n - k]))
            ts = np.concatenate((self._ts[i0:], self._ts[: n - k]))
        # anything below oldest_valid may have been overwritten while we copied
        oldest_valid = self._reserved - cap
        if start < oldest_valid:
            drop = min(n, oldest_valid - start)
            return data[drop:].T, ts[drop:], start + drop
        return data.T, ts, start

    def read_last(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` samples.

        Parameters
        ----------
        n : int
            Number of samples, at most ``capacity``.

        Returns
        -------
        data : array, shape (n_channels, m)
            ``m = n`` once the buffer holds ``n`` samples; fewer before that.
        timestamps : array, shape (m,)
        """
        n = int(n)
        if n < 0 or n > self._capacity:
            raise ValueError(f"n must be in [0, capacity={self._capacity}], got {n}")
        for _ in range(_MAX_READ_RETRIES):
            stop = self._n_written
            start = max(0, stop - n)
            data, ts, first = self._copy_range(start, stop)
            if first == start:
                return data, ts
        return data, ts  # the writer lapped us repeatedly: return what was intact

    def read_between(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Samples with ``t0 <= timestamp < t1`` among those held.

        Returns
        -------
        data : array, shape (n_channels, m)
        timestamps : array, shape (m,)
        """
        if not t1 >= t0:
            raise ValueError(f"need t0 <= t1, got t0={t0}, t1={t1}")
        for _ in range(_MAX_READ_RETRIES):
            stop = self._n_written
            oldest = max(0, self._reserved - self._capacity)
            lo = self._search(t0, oldest, stop)
            hi = self._search(t1, lo, stop)
            data, ts, first = self._copy_range(lo, hi)
            if first == lo:
                return data, ts
        return data, ts

    def _search(self, t: float, lo: int, hi: int) -> int:
        """First absolute index in ``[lo, hi)`` whose timestamp is >= t (binary search, O(log n))."""
        cap = self._capacity
        ts = self._ts
        while lo < hi:
            mid = (lo + hi) // 2
            if ts[mid % cap] < t:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def read_since(self, cursor: int, max_samples: int | None = None) -> ReadResult:
        """Everything written since ``cursor`` (an absolute sample index, e.g. a previous result's cursor).

        Parameters
        ----------
        cursor : int
            Absolute index of the first wanted sample; 0 reads from the start, ``n_written`` reads only
            what comes next.
        max_samples : int | None
            Return at most this many (the oldest ones); the returned cursor lets the next call continue.

        Returns
        -------
        ReadResult
            ``n_overwritten`` counts samples from ``cursor`` on that were lost before the reader got them.
        """
        cursor = int(cursor)
        if cursor < 0:
            raise ValueError(f"cursor must be >= 0, got {cursor}")
        stop = self._n_written
        if cursor > stop:
            raise ValueError(f"cursor {cursor} is ahead of n_written={stop}; cursors come from this buffer")
        start = max(cursor, self._reserved - self._capacity)
        start = min(start, stop)
        if max_samples is not None:
            stop = min(stop, start + max(0, int(max_samples)))
        data, ts, first = self._copy_range(start, stop)
        return ReadResult(data, ts, first + data.shape[1], first - cursor)

    def wait(self, cursor: int, timeout: float | None = None) -> bool:
        """Block until ``n_written > cursor``; return False on timeout.

        Lets a consumer thread sleep until new samples arrive instead of polling.
        """
        if self._n_written > cursor:
            return True
        with self._cond:
            self._n_waiting += 1
            try:
                return self._cond.wait_for(lambda: self._n_written > cursor, timeout)
            finally:
                self._n_waiting -= 1
