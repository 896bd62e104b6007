"""Acquisition statistics and the gap detectors that feed them.

A gap is recorded, never hidden: each one keeps the ring-buffer index of the first sample after it, so a
consumer can refuse to cut a window across it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# gap kinds
TIMESTAMP_GAP = "timestamp"  # consecutive timestamps more than 1.5 sample periods apart
COUNTER_GAP = "counter"  # the sample-counter channel skipped values
RECONNECT_GAP = "reconnect"  # the outlet went away and a new one with the same source_id came back


@dataclass(frozen=True)
class Gap:
    """Missing data between two received samples.

    Attributes
    ----------
    index : int
        Ring-buffer absolute index (``RingBuffer.n_written`` numbering) of the first sample after the gap.
    t_before, t_after : float
        LSL timestamps of the samples either side of the gap.
    n_missing : int
        Samples missing: from the counter channel when there is one, else from the timestamps
        (``round((t_after - t_before) * sfreq) - 1``). -1 if unknown (the counter went backwards).
    kind : str
        ``"timestamp"``, ``"counter"`` or ``"reconnect"``.
    """

    index: int
    t_before: float
    t_after: float
    n_missing: int
    kind: str


@dataclass(frozen=True)
class AcquisitionStats:
    """A snapshot of a :class:`~realtime.acquisition.StreamReader`'s counters.

    Attributes
    ----------
    samples, chunks : int
        Samples and chunks received (pulled from the inlet) since start.
    effective_rate : float
        Samples per second of LSL time over the last few seconds (nan until known).
    gaps : int
        Gaps of any kind (counter skips, or timestamp jumps > 1.5 periods when there is no counter channel,
        and reconnections), each counted once.
    missing_samples : int
        Sum of ``n_missing`` over those gaps (unknown ones count 0).
    counter_gaps : int
        Gaps seen by the counter channel (0 without one).
    timestamp_jumps : int
        Consecutive timestamps more than 1.5 periods apart. Without a counter channel each is a gap; with
        one, only the counter decides (dejittered timestamps jump while liblsl's estimate settles).
    timestamp_regressions : int
        Samples whose timestamp was not after the previous one's.
    restamped_samples : int
        Samples of a connection's start that liblsl stamped from 0 (sccn/liblsl#161), re-stamped back
        from the first stamped sample (:mod:`~realtime.acquisition.deduced_stamps`); not gaps.
    nan_samples : int
        Samples with at least one NaN or Inf value.
    stalled : bool
        No sample for longer than ``stall_timeout`` now.
    stalls : int
        Times the stream stalled.
    lost : bool
        The outlet is gone and no replacement has been connected yet.
    reconnects : int
        New outlets (same source_id) connected after a loss or stall.
    time_since_last_sample : float
        Seconds (local clock) since the last chunk arrived; nan before the first.
    clock_offset : float
        Latest ``inlet.time_correction()`` in seconds (nan until estimated).
    last_timestamp : float
        Timestamp of the newest sample (nan before the first).
    stall_timeout : float
        Stall threshold in use, seconds.
    """

    samples: int
    chunks: int
    effective_rate: float
    gaps: int
    missing_samples: int
    counter_gaps: int
    timestamp_jumps: int
    timestamp_regressions: int
    restamped_samples: int
    nan_samples: int
    stalled: bool
    stalls: int
    lost: bool
    reconnects: int
    time_since_last_sample: float
    clock_offset: float
    last_timestamp: float
    stall_timeout: float

    def as_dict(self) -> dict[str, float | int]:
        """Numbers only (bools as 0/1), as a ``status.<node>`` message carries them."""
        return {k: int(v) if isinstance(v, bool) else v for k, v in asdict(self).items()}


_NONE = np.empty(0, np.intp)
_NONE.flags.writeable = False


def timestamp_gaps(ts: np.ndarray, prev_ts: float | None, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``ts`` that follow a jump > 1.5 periods, and the positions that did not advance.

    Parameters
    ----------
    ts : array, shape (n,)
        Timestamps of one chunk.
    prev_ts : float | None
        Timestamp of the sample before the chunk (None at the start: the first sample is not checked).
    period : float
        Nominal sample period in seconds.

    Returns
    -------
    gap_pos : int array
        Index ``i`` such that a gap lies between sample ``i - 1`` (or ``prev_ts``) and sample ``i``.
    regress_pos : int array
        Index ``i`` whose timestamp is <= the previous one.
    """
    if ts.size == 0:
        return _NONE, _NONE
    # fast path (every chunk of a healthy stream): a few reductions instead of diff/prepend/flatnonzero
    limit = 1.5 * period
    step = ts[1:] - ts[:-1]
    first_ok = prev_ts is None or 0 < ts[0] - prev_ts <= limit
    if first_ok and (step.size == 0 or (step.min() > 0 and step.max() <= limit)):
        return _NONE, _NONE
    dt = np.diff(ts, prepend=ts[0] if prev_ts is None else prev_ts)
    gap_pos = np.flatnonzero(dt > limit)
    regress_pos = np.flatnonzero(dt <= 0)
    if prev_ts is None and regress_pos.size and regress_pos[0] == 0:
        regress_pos = regress_pos[1:]
    return gap_pos, regress_pos


def counter_gaps(counter: np.ndarray, prev: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions where a sample counter did not advance by exactly one, and the samples missed there.

    Returns
    -------
    pos : int array
        Index ``i`` where ``counter[i] != counter[i - 1] + 1`` (or ``prev + 1`` for ``i = 0``).
    n_missing : int array
        ``counter[i] - counter[i - 1] - 1``; -1 where the counter went backwards or repeated.
    """
    if counter.size == 0:
        return _NONE, np.empty(0, np.int64)
    step = counter[1:] - counter[:-1]
    if (prev is None or counter[0] == prev + 1) and (step.size == 0 or step.min() == step.max() == 1):
        return _NONE, np.empty(0, np.int64)  # fast path: contiguous
    c = np.rint(counter).astype(np.int64)
    d = np.diff(c, prepend=c[0] - 1 if prev is None else prev)
    pos = np.flatnonzero(d != 1)
    missing = d[pos] - 1
    missing[missing < 0] = -1
    return pos, missing
