"""Incremental sliding windows for the decoder node: only each stride's new samples go through the encoder.

:class:`IncrementalSliding` reads the model-rate samples the :class:`~realtime.decoder.online.OnlineWindower`
has preprocessed, streams them into an :class:`~models.incremental.IncrementalEncoder` (a causal checkpoint)
as they arrive, and reads the embedding of a sliding window right after the window's last sample went in.
The embedding equals the causal model run on the whole window (``models.incremental``), at ~1/40 of the
work per 50 ms stride for the full-size brain module.

It keeps the windows and the drop rules of the full path (``OnlineWindower._ready_sliding``): windows end on
the same global grid of model-rate indices; of several ends in one call only the newest is encoded, the
others are counted late; a window over a timestamp gap (or over samples lost to buffer overwriting) is
dropped as missing, one over a non-finite sample as nan. The stream is checked sample by sample instead of
window by window: a gap resets the encoder's state before the sample after it, a non-finite sample is skipped
and resets the state after it, so no embedding ever depends on missing data, and the encoder is ready again
(a full window of clean, contiguous history) exactly when the full path would keep a window again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from brainstream.models.windowing import sliding_window_ends
from brainstream.realtime.decoder.online import OnlineWindower

__all__ = ["EncodedWindow", "IncrementalSliding"]


@dataclass
class EncodedWindow:
    """The embedding of one sliding window, computed incrementally."""

    embedding: np.ndarray  # (dim,) float32
    t_sample: float  # LSL time of the window's last sample
    t_ready: float  # local_clock() when the push holding the last sample began
    t_encoded: float  # local_clock() when the embedding was out


class IncrementalSliding:
    """Drive an incremental encoder from a sliding-mode windower's model-rate buffer.

    Parameters
    ----------
    windower : OnlineWindower
        In sliding mode; its preprocessor fills ``windower.buffer``, its ``stats`` count windows and drops.
        Do not call its ``ready()`` as well: this object replaces it.
    encoder : IncrementalEncoder
        Built from the checkpoint whose window the windower cuts (``encoder.window == spec.n_times``).
    clock : callable
        LSL clock for the trace times.
    eager : bool
        Push samples into the encoder as soon as they arrive, spreading a stride's computation over its
        chunks, instead of once per stride when a window's last sample is in. One encoder call costs about
        the same for 1 or 6 new samples on a CPU (call overhead dominates: ``brainstream bench decode``), so
        the default pushes once per stride.
    """

    def __init__(
        self,
        windower: OnlineWindower,
        encoder,
        clock: Callable[[], float] = pylsl.local_clock,
        eager: bool = False,
    ):
        if windower.mode != "sliding":
            raise ValueError(
                f"incremental windows are sliding windows; the windower is in {windower.mode} mode"
            )
        if encoder.window != windower.spec.n_times:
            raise ValueError(
                f"the incremental encoder takes windows of {encoder.window} samples but the checkpoint's "
                f"window [{windower.spec.tmin}, {windower.spec.tmax}) s holds {windower.spec.n_times} at "
                f"{windower.spec.sfreq:g} Hz; the checkpoint's arch and window disagree: re-save it"
            )
        if encoder.n_channels != windower.buffer.n_channels:
            raise ValueError(
                f"the encoder takes {encoder.n_channels} channels, the windower gives "
                f"{windower.buffer.n_channels}"
            )
        self.windower, self.encoder, self.clock, self.eager = windower, encoder, clock, eager
        self.window = int(encoder.window)
        self.period = 1.0 / windower.spec.sfreq
        self.cursor = windower.buffer.n_written  # next model-rate index to stream in
        self._next_end = self.cursor  # sliding-window ends are searched from here
        # global index of the first sample after the latest break (gap, overwrite, start of streaming):
        # a window is whole only if it starts at or after it
        self._history_from = self.cursor
        self._last_gap = self.cursor  # global index of the first sample after the latest break
        self._last_nan = -1  # global index of the latest non-finite sample
        self._last_ts: float | None = None
        self.resets = 0
        encoder.reset()

    # --------------------------------------------------------------------------------------------- state
    def _break(self, index: int) -> None:
        """Samples ``index - 1`` and ``index`` are not contiguous: start a new history at ``index``."""
        self.encoder.reset()
        self._history_from = self._last_gap = index
        self.resets += 1

    def _skip_nonfinite(self, index: int) -> None:
        """Sample ``index`` is not finite: it never enters the encoder; history restarts after it."""
        self.encoder.reset()
        self._last_nan = index
        self._history_from = max(self._history_from, index + 1)
        self.resets += 1

    def _finish(self, end: int, t_ready: float, out: list[EncodedWindow], t_sample: float) -> None:
        """Sample ``end`` (a window end) has been handled: publish the embedding or count the drop."""
        start = end - self.window + 1
        stats = self.windower.stats
        emb = self.encoder.embedding() if start >= self._history_from else None
        if emb is not None:
            out.append(EncodedWindow(emb.astype(np.float32, copy=False), t_sample, t_ready, self.clock()))
        elif self._last_gap <= start and self._last_nan >= start:  # as the full path: a gap counts first
            stats.dropped_nan += 1
        else:  # a gap or lost samples inside the window (or it began before streaming did)
            stats.dropped_missing += 1

    # ---------------------------------------------------------------------------------------------- step
    def ready(self) -> list[EncodedWindow]:
        """Stream all new model-rate samples into the encoder; return the newest window's embedding."""
        buffer, stride = self.windower.buffer, self.windower.stride
        ends = sliding_window_ends(self._next_end, buffer.n_written, self.window, stride)
        if not self.eager and not ends.size:
            return []  # no window ends yet: the samples wait in the buffer, one encoder call per stride
        res = buffer.read_since(self.cursor)
        n = res.data.shape[1]
        first = res.cursor - n  # global index of res.data[:, 0]
        self.cursor = res.cursor
        if res.n_overwritten:  # the loop fell so far behind that the buffer dropped samples
            self._break(first)
            self._last_ts = None
        ends = sliding_window_ends(self._next_end, self.cursor, self.window, stride)
        self._next_end = self.cursor
        out: list[EncodedWindow] = []
        if n == 0:
            return out
        target = -1
        if ends.size:  # only the newest window matters live, as in the full path
            self.windower.stats.dropped_late += int(ends.size - 1)
            target = int(ends[-1]) - first
            if target < 0:  # it ended among the samples the buffer lost
                self.windower.stats.dropped_missing += 1
        data, ts = res.data, res.timestamps
        prev = ts[0] - self.period if self._last_ts is None else self._last_ts
        steps = np.diff(ts, prepend=prev)
        gap = np.abs(steps - self.period) > 0.5 * self.period  # gap[i]: samples i - 1 and i not contiguous
        bad = ~np.isfinite(data).all(axis=0)
        self._last_ts = float(ts[-1])
        breaks = np.flatnonzero(gap | bad)
        i = 0
        while i < n:
            if gap[i]:
                self._break(first + i)
            if bad[i]:
                self._skip_nonfinite(first + i)
                if i == target:
                    self._finish(first + i, self.clock(), out, float(ts[i]))
                i += 1
                continue
            # a clean, contiguous run [i, j), cut after the window end so its embedding can be read
            k = int(np.searchsorted(breaks, i, side="right"))
            j = int(breaks[k]) if k < breaks.size else n
            if i <= target < j:
                t_ready = self.clock()
                self.encoder.push(data[:, i : target + 1])
                self._finish(first + target, t_ready, out, float(ts[target]))
                i = target + 1
            if i < j:
                self.encoder.push(data[:, i:j])
            i = j
        self.windower.stats.windows += len(out)
        return out
