"""Timestamps liblsl deduces from 0 at the start of a connection, put back where they belong.

An outlet that pushes a chunk with one timestamp sends its other samples as *deduced*: the inlet stamps
each from the one before it. An inlet that connects in the middle of such a chunk receives deduced samples
before any stamped one, and liblsl stamps them from 0: ``1/sfreq, 2/sfreq, ...`` in the outlet's clock
(sccn/liblsl#161). Read as they come, the next stamped sample looks like a gap of the outlet host's whole
uptime (a soak's decoder once counted 38,371,265 missing samples at 1200 Hz). The samples themselves are
fine and contiguous with the first stamped one, so they are re-stamped backwards from it.

The sign of the race is unambiguous: a regular stream's real timestamps are LSL clock readings, seconds
since its host booted, never within :data:`DEDUCED_WINDOW_S` of 0. The stamped sample may come in a later
pull, so the suspect samples are held (at most :data:`HOLD_LIMIT_S` of them) until it does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

DEDUCED_WINDOW_S = 2.0  # deduced-from-0 stamps are k / sfreq for k < the outlet's chunk length
HOLD_LIMIT_S = 2.0  # give held samples on as they are when no stamped sample comes within this much


class DeducedStartStamps:
    """Re-stamp a connection's leading samples that liblsl stamped from 0.

    Parameters
    ----------
    name : str
        The stream, for the log.

    Notes
    -----
    Call :meth:`settle` with every pulled chunk, the inlet's identity and a way to read the clock offset
    that the inlet's post-processing added (0 without ``clocksync``); it returns the chunk to keep, the
    held samples before it, or ``None`` while it holds. It only looks at the first chunks of a connection:
    once a connection starts with a real timestamp, the chunk passes through untouched.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.restamped = 0  # samples re-stamped over the reader's life
        self._uid: str | None = None
        self._held: tuple[np.ndarray, np.ndarray] | None = None
        self._held_uid: str | None = None

    @property
    def holding(self) -> int:
        """Samples held back, waiting for the connection's first stamped sample."""
        return 0 if self._held is None else len(self._held[1])

    def settle(
        self,
        values: np.ndarray,
        ts: np.ndarray,
        sfreq: float,
        uid: str,
        offset: Callable[[], float],
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``values`` (samples along axis 0) and ``ts`` to keep now, or ``None`` while holding them."""
        if uid == self._uid:
            return values, ts
        if self._held is not None and self._held_uid != uid:
            log.warning("%s: dropped %d held samples of a connection that ended", self.name, self.holding)
            self._held = None
        if self._held is None:
            # first chunk of this connection: a deduced-from-0 stamp is k / sfreq in the outlet's clock
            first = float(ts[0]) - offset()
            if not 0.0 < first <= DEDUCED_WINDOW_S:
                self._uid = uid
                return values, ts
            held_v, held_t = np.array(values, copy=True), np.array(ts, dtype=np.float64, copy=True)
        else:
            held_v = np.concatenate([self._held[0], values])
            held_t = np.concatenate([self._held[1], np.asarray(ts, dtype=np.float64)])
        jumps = np.flatnonzero(np.diff(held_t) > DEDUCED_WINDOW_S)
        if jumps.size:
            p = int(jumps[0]) + 1
            held_t[:p] = held_t[p] - np.arange(p, 0, -1) / sfreq
            self.restamped += p
            log.warning(
                "%s: liblsl stamped the connection's first %d samples from 0 (sccn/liblsl#161); re-stamped "
                "them back from the first stamped sample (t=%.3f)", self.name, p, held_t[p],
            )  # fmt: skip
            return self._release(uid, held_v, held_t)
        if len(held_t) >= HOLD_LIMIT_S * sfreq:
            log.warning(
                "%s: the connection's first %d samples carry timestamps near 0 and no stamped sample came "
                "after them; kept as they are", self.name, len(held_t),
            )  # fmt: skip
            return self._release(uid, held_v, held_t)
        self._held, self._held_uid = (held_v, held_t), uid
        return None

    def _release(self, uid: str, values: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._held, self._uid = None, uid
        return values, ts
