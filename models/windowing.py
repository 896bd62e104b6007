"""Cutting model-rate windows out of preprocessed samples, the same way offline and online.

A window is ``spec.n_times`` consecutive model-rate samples. For an event at ``onset`` (LSL seconds) the
first sample is the one whose timestamp is nearest to ``onset + tmin``; the window then runs for
``round((tmax - tmin) * sfreq)`` samples (half-open ``[tmin, tmax)``, so 1.5 s at 120 Hz is 180 samples).
A window whose samples have not all arrived is *late* (ask again later); one with a hole in its
timestamps, or starting before the data, is *missing*; one with a non-finite value is *nan*. Such
windows are reported with their status, never padded.

Sliding windows end on a fixed grid of model-rate sample indices (every ``stride`` samples), so which
windows exist does not depend on how samples arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

__all__ = [
    "CutWindow",
    "EpochResult",
    "WindowSpec",
    "WindowStatus",
    "baseline_correct",
    "cut_epochs",
    "cut_window",
    "locate_window",
    "sliding_window_ends",
    "sliding_windows",
]


@dataclass(frozen=True)
class WindowSpec:
    """Window ``[tmin, tmax)`` in seconds around an event, at model rate ``sfreq``.

    For sliding windows only the length ``tmax - tmin`` matters.
    """

    tmin: float
    tmax: float
    sfreq: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sfreq) and self.sfreq > 0):
            raise ValueError(f"WindowSpec sfreq must be a positive rate in Hz, got {self.sfreq!r}")
        if not (np.isfinite(self.tmin) and np.isfinite(self.tmax)) or self.tmax <= self.tmin:
            raise ValueError(f"WindowSpec needs tmin < tmax, got tmin={self.tmin}, tmax={self.tmax}")
        if self.n_times < 1:
            raise ValueError(f"window {self.tmin}..{self.tmax} s holds no sample at {self.sfreq} Hz")

    @property
    def n_times(self) -> int:
        """Number of samples per window."""
        return int(round((self.tmax - self.tmin) * self.sfreq))

    @property
    def duration(self) -> float:
        return self.n_times / self.sfreq

    @property
    def times(self) -> np.ndarray:
        """Nominal sample times relative to the onset (s)."""
        return self.tmin + np.arange(self.n_times) / self.sfreq


class WindowStatus(str, Enum):
    OK = "ok"
    LATE = "late"  # not all samples have arrived yet
    MISSING = "missing"  # starts before the available data, or a gap in the timestamps
    NAN = "nan"  # contains a non-finite value (e.g. a dropped-out sensor)


@dataclass
class CutWindow:
    """One window: ``data`` (n_channels, n_times) float32 and its timestamps when ``status`` is OK."""

    status: WindowStatus
    data: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    start: int = -1  # index of the first sample in the array it was cut from
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is WindowStatus.OK

    @property
    def t_last(self) -> float:
        """Timestamp of the last sample (the window's ``t_sample``)."""
        if self.timestamps is None:
            raise ValueError(f"window is {self.status.value}: {self.reason}")
        return float(self.timestamps[-1])


def locate_window(
    timestamps: np.ndarray, onset: float, spec: WindowSpec, tolerance: float = 0.5
) -> tuple[WindowStatus, int, str]:
    """Find the first sample of the window for ``onset`` in ``timestamps``.

    Parameters
    ----------
    timestamps : array, shape (n,)
        Increasing model-rate timestamps (s).
    onset : float
        Event time (s), same clock.
    spec : WindowSpec
    tolerance : float
        Allowed deviation of a timestamp from the nominal grid, in samples.

    Returns
    -------
    status, start, reason
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    period = 1.0 / spec.sfreq
    tol = tolerance * period
    target0 = onset + spec.tmin
    target_last = target0 + (spec.n_times - 1) * period
    if ts.size == 0 or ts[-1] < target_last - tol:
        return WindowStatus.LATE, -1, "window end has not arrived yet"
    i = int(np.searchsorted(ts, target0))
    if i > 0 and (i == ts.size or abs(ts[i - 1] - target0) <= abs(ts[i] - target0)):
        i -= 1
    if abs(ts[i] - target0) > tol:
        where = "before the available data" if i == 0 else "in a gap of the data"
        return WindowStatus.MISSING, -1, f"window start {target0:.4f} s is {where}"
    end = i + spec.n_times
    if end > ts.size:
        return WindowStatus.LATE, -1, "window end has not arrived yet"
    steps = np.diff(ts[i:end])
    if steps.size and np.max(np.abs(steps - period)) > tol:
        return WindowStatus.MISSING, -1, "samples are missing inside the window (timestamp gap)"
    return WindowStatus.OK, i, ""


def baseline_correct(
    window: np.ndarray, spec: WindowSpec, baseline: tuple[float | None, float | None] | None
) -> np.ndarray:
    """Subtract each channel's mean over ``baseline`` (s relative to onset; None = window edge).

    Works on ``(..., n_channels, n_times)``; returns a new array.
    """
    if baseline is None:
        return np.array(window, copy=True)
    b0, b1 = baseline
    t = spec.times
    eps = 0.5 / spec.sfreq * 1e-3
    sel = np.ones(spec.n_times, dtype=bool)
    if b0 is not None:
        sel &= t >= b0 - eps
    if b1 is not None:
        sel &= t <= b1 + eps
    if not sel.any():
        raise ValueError(
            f"baseline {baseline} selects no sample of the window {spec.tmin}..{spec.tmax} s; choose an "
            "interval inside the window"
        )
    mean = window[..., sel].mean(axis=-1, keepdims=True)
    return window - mean


def cut_window(
    data: np.ndarray,
    timestamps: np.ndarray,
    onset: float,
    spec: WindowSpec,
    baseline: tuple[float | None, float | None] | None = None,
) -> CutWindow:
    """Cut the window for one event from model-rate ``data`` (n_channels, n) stamped by ``timestamps``.

    The same function serves the offline loaders and the online decoder node.
    """
    status, start, reason = locate_window(timestamps, onset, spec)
    if status is not WindowStatus.OK:
        return CutWindow(status, start=start, reason=reason)
    stop = start + spec.n_times
    win = np.asarray(data[:, start:stop], dtype=np.float32)
    if not np.all(np.isfinite(win)):
        return CutWindow(WindowStatus.NAN, start=start, reason="window contains non-finite values")
    win = baseline_correct(win, spec, baseline).astype(np.float32, copy=False)
    return CutWindow(WindowStatus.OK, win, np.asarray(timestamps[start:stop], dtype=np.float64), start)


@dataclass
class EpochResult:
    """Epochs of the events whose window was complete; ``statuses`` has one entry per requested event."""

    X: np.ndarray  # (n_kept, n_channels, n_times) float32
    kept: np.ndarray  # (n_kept,) indices into the requested onsets / sliding-window grid
    statuses: list[WindowStatus] = field(default_factory=list)
    t_last: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n_kept,) last-sample timestamps

    @property
    def n_dropped(self) -> int:
        return len(self.statuses) - int(self.kept.size)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in WindowStatus}
        for s in self.statuses:
            out[s.value] += 1
        return out


def cut_epochs(
    data: np.ndarray,
    timestamps: np.ndarray,
    onsets: np.ndarray,
    spec: WindowSpec,
    baseline: tuple[float | None, float | None] | None = None,
) -> EpochResult:
    """:func:`cut_window` for each onset; incomplete windows are dropped and their status reported."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != np.asarray(timestamps).size:
        raise ValueError(
            f"expected data (n_channels, n_times) matching {np.asarray(timestamps).size} timestamps, "
            f"got {data.shape}"
        )
    X, kept, statuses, t_last = [], [], [], []
    for k, onset in enumerate(np.asarray(onsets, dtype=np.float64).ravel()):
        w = cut_window(data, timestamps, float(onset), spec, baseline)
        statuses.append(w.status)
        if w.ok:
            X.append(w.data)
            kept.append(k)
            t_last.append(w.t_last)
    arr = np.stack(X) if X else np.zeros((0, data.shape[0], spec.n_times), np.float32)
    return EpochResult(arr, np.asarray(kept, dtype=np.intp), statuses, np.asarray(t_last, np.float64))


def sliding_window_ends(n_from: int, n_to: int, n_times: int, stride: int) -> np.ndarray:
    """Global sample indices ``e`` in ``[n_from, n_to)`` at which a sliding window ends (inclusive).

    Windows end where ``(e + 1) % stride == 0`` and a full window fits (``e + 1 >= n_times``); counting
    from the first model-rate sample, this grid does not depend on chunking.
    """
    if stride < 1 or n_times < 1:
        raise ValueError(f"stride and n_times must be >= 1, got stride={stride}, n_times={n_times}")
    first = max(n_from, n_times - 1)
    first += (-(first + 1)) % stride
    return np.arange(first, n_to, stride, dtype=np.int64)


def sliding_windows(data: np.ndarray, timestamps: np.ndarray, spec: WindowSpec, stride: int) -> EpochResult:
    """All sliding windows of a model-rate recording (offline); windows with a gap or NaN are dropped."""
    data = np.asarray(data)
    ts = np.asarray(timestamps, dtype=np.float64)
    n = spec.n_times
    ends = sliding_window_ends(0, ts.size, n, stride)
    X, kept, statuses, t_last = [], [], [], []
    period = 1.0 / spec.sfreq
    for k, e in enumerate(ends):
        s = e - n + 1
        win = data[:, s : e + 1]
        steps = np.diff(ts[s : e + 1])
        if steps.size and np.max(np.abs(steps - period)) > 0.5 * period:
            statuses.append(WindowStatus.MISSING)
        elif not np.all(np.isfinite(win)):
            statuses.append(WindowStatus.NAN)
        else:
            statuses.append(WindowStatus.OK)
            X.append(np.asarray(win, dtype=np.float32))
            kept.append(k)
            t_last.append(ts[e])
    arr = np.stack(X) if X else np.zeros((0, data.shape[0], n), np.float32)
    return EpochResult(arr, np.asarray(kept, dtype=np.intp), statuses, np.asarray(t_last, np.float64))
