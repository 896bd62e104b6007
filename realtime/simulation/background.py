"""Ongoing activity and artefacts of the virtual subject, generated in fixed blocks.

Background is produced in blocks of a fixed length counted from the first sample, each from its own
generator state, so the data do not depend on how callers chunk their reads (offline = live).

Components (sensor space, SI units):

- 1/f source noise: dipoles spread over the brain, each driven by a sum of first-order low-pass processes with
  log-spaced corner frequencies and gains ∝ 1/corner, whose spectrum is ≈ 1/f from ~0.3 Hz to ~100 Hz;
- occipital alpha: a few occipital / parieto-occipital dipoles driven by an 8-12 Hz resonator; returned
  separately so the subject can scale it down after each stimulus (event-related desynchronisation);
- sensor noise (white), line noise at the mains frequency and its 3rd harmonic, slow drift per channel
  (an AR(1) process sampled at block edges and interpolated linearly: cheap, and far below 0.1 Hz anyway);
- blinks on frontal EEG channels (random, about one every 4 s), and an optional bad channel (noisy, jumpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

PINK_CORNERS_HZ = (0.3, 0.9, 2.7, 8.1, 24.3, 72.9)


@dataclass(frozen=True)
class BackgroundParams:
    """Relative sizes of the background components (multiples of the 1/f brain background's RMS)."""

    n_noise_sources: int = 64
    alpha_rel: float = 1.0
    sensor_noise_rel: float = 0.3
    line_rel: float = 0.3
    drift_rel: float = 2.0
    drift_tau_s: float = 20.0
    blink_rate_hz: float = 0.25
    blink_rel: float = 8.0
    bad_channel_rel: float = 5.0


class Background:
    """Block generator of ongoing activity for one subject.

    Parameters
    ----------
    n_channels : int
        Number of sensors.
    sfreq : float
        Sampling rate (Hz).
    noise_mixing : ndarray, shape (n_channels, n_noise_sources)
        Fixed-orientation gain of the 1/f dipoles.
    alpha_mixing : ndarray, shape (n_channels, n_alpha_sources)
        Gain of the alpha dipoles.
    brain_scale : float
        Dipole moment (A·m) that gives the 1/f brain background its intended sensor RMS.
    sensor_rms : float
        RMS of the brain background at sensors (T or V); other components are multiples of it.
    rng : numpy.random.Generator
        Seeded generator for the subject's fixed properties.
    seed : int
        Root of the per-block generators.
    frontal_weight : ndarray, shape (n_channels,) | None
        Blink topography (1 at the eyes' nearest sensors, 0 far away); None disables blinks.
    bad_channel : int | None
        Index of a channel that misbehaves, or None.
    line_freq : float
        Mains frequency (Hz).
    block_len : int
        Samples per block.
    """

    def __init__(
        self,
        n_channels: int,
        sfreq: float,
        noise_mixing: np.ndarray,
        alpha_mixing: np.ndarray,
        brain_scale: float,
        sensor_rms: float,
        rng: np.random.Generator,
        seed: int,
        *,
        frontal_weight: np.ndarray | None,
        bad_channel: int | None,
        line_freq: float,
        block_len: int,
        params: BackgroundParams = BackgroundParams(),  # noqa: B008 (frozen dataclass)
    ) -> None:
        self.n_channels = n_channels
        self.sfreq = float(sfreq)
        self.params = params
        self.noise_mixing = noise_mixing.astype(np.float32) * np.float32(brain_scale)
        self.alpha_mixing = alpha_mixing.astype(np.float32) * np.float32(brain_scale)
        self.sensor_rms = float(sensor_rms)
        self.seed = int(seed)
        self.block_len = int(block_len)
        self.frontal_weight = frontal_weight
        self.bad_channel = bad_channel
        self.line_freq = float(line_freq)
        n_src = noise_mixing.shape[1]
        # 1/f: AR(1) low-passes, gains ∝ 1/sqrt(corner) in amplitude so power ∝ 1/f between corners
        self._poles = [np.exp(-2 * np.pi * fc / self.sfreq) for fc in PINK_CORNERS_HZ]
        self._pole_gains = [
            (1 - p) / np.sqrt(fc) * np.sqrt(self.sfreq)
            for p, fc in zip(self._poles, PINK_CORNERS_HZ, strict=True)
        ]
        self._pink_zi = [np.zeros((n_src, 1)) for _ in self._poles]
        self._pink_norm = self._pink_rms_unit()
        # alpha: 2nd-order resonator at the subject's alpha frequency
        self.alpha_freq = float(rng.uniform(9.0, 11.5))
        r = np.exp(-np.pi * 2.0 / self.sfreq)  # ~2 Hz bandwidth
        self._alpha_a = np.array([1.0, -2 * r * np.cos(2 * np.pi * self.alpha_freq / self.sfreq), r * r])
        self._alpha_b = np.array([1.0 - r])
        self._alpha_norm = np.sqrt(np.sum(lfilter(self._alpha_b, self._alpha_a, _unit_impulse(20000)) ** 2))
        self._alpha_zi = np.zeros((alpha_mixing.shape[1], 2))
        # drift: AR(1) knots at block edges (time constant drift_tau_s), linear in between
        self._drift_pole = float(np.exp(-self.block_len / (params.drift_tau_s * self.sfreq)))
        self._drift_knot = rng.standard_normal(n_channels)  # start in the stationary state
        self._ramp = (np.arange(self.block_len) / self.block_len).astype(np.float32)
        # line noise: amp·sin(wt + φ) = (amp cos φ)·sin(wt) + (amp sin φ)·cos(wt), two rank-1 terms
        line_amp = params.line_rel * self.sensor_rms * rng.uniform(0.3, 1.7, n_channels)
        line_phase = rng.uniform(0, 2 * np.pi, n_channels)
        self._line_cs = np.stack([line_amp * np.cos(line_phase), line_amp * np.sin(line_phase)], 1).astype(
            np.float32
        )
        self._blink_carry = np.zeros(0, dtype=np.float32)
        self._next_block = 0

    def _pink_rms_unit(self) -> float:
        """RMS of the summed AR processes for unit white input (analytic), to normalise the sum."""
        var = 0.0
        for p1, g1 in zip(self._poles, self._pole_gains, strict=True):
            for p2, g2 in zip(self._poles, self._pole_gains, strict=True):
                var += g1 * g2 / (1 - p1 * p2)
        return float(np.sqrt(var))

    def next_block(self) -> tuple[np.ndarray, np.ndarray]:
        """The next block: ``(background (n_ch, block_len) float32, alpha (n_ch, block_len) float32)``."""
        p = self.params
        n = self.block_len
        rng = np.random.default_rng([self.seed, 7919, self._next_block])
        start = self._next_block * n
        self._next_block += 1

        white = rng.standard_normal((self.noise_mixing.shape[1], n))
        pink = np.zeros_like(white)
        for i, (pole, gain) in enumerate(zip(self._poles, self._pole_gains, strict=True)):
            y, self._pink_zi[i] = lfilter([gain], [1.0, -pole], white, axis=1, zi=self._pink_zi[i])
            pink += y
        pink *= 1.0 / self._pink_norm / np.sqrt(self.noise_mixing.shape[1])
        out = self.noise_mixing @ pink.astype(np.float32)

        aw = rng.standard_normal((self.alpha_mixing.shape[1], n))
        alpha, self._alpha_zi = lfilter(self._alpha_b, self._alpha_a, aw, axis=1, zi=self._alpha_zi)
        alpha *= p.alpha_rel / self._alpha_norm / np.sqrt(self.alpha_mixing.shape[1])
        alpha_sensors = self.alpha_mixing @ alpha.astype(np.float32)

        out += rng.standard_normal((self.n_channels, n), dtype=np.float32) * np.float32(
            p.sensor_noise_rel * self.sensor_rms
        )
        t = (start + np.arange(n)) / self.sfreq
        wt = 2 * np.pi * self.line_freq * t
        mains = np.stack([np.sin(wt) + 0.3 * np.sin(3 * wt), np.cos(wt) + 0.3 * np.cos(3 * wt)])
        out += self._line_cs @ mains.astype(np.float32)

        knot = self._drift_pole * self._drift_knot + np.sqrt(1 - self._drift_pole**2) * rng.standard_normal(
            self.n_channels
        )
        d0 = (p.drift_rel * self.sensor_rms * self._drift_knot).astype(np.float32)
        d1 = (p.drift_rel * self.sensor_rms * knot).astype(np.float32)
        out += d0[:, None] + (d1 - d0)[:, None] * self._ramp[None, :n]
        self._drift_knot = knot

        if self.frontal_weight is not None:
            out += self._blinks(rng, n)[None, :] * self.frontal_weight[:, None].astype(np.float32)
        if self.bad_channel is not None:
            jumps = np.cumsum(rng.random(n) < 0.5 / self.sfreq) * 3.0  # a step now and then
            bad = rng.standard_normal(n) * p.bad_channel_rel + jumps
            out[self.bad_channel] += (bad * self.sensor_rms).astype(np.float32)
        return out, alpha_sensors

    def _blinks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Blink waveform for this block (positive 250-400 ms bumps), carrying over the block edge."""
        p = self.params
        buf = np.zeros(n + int(self.sfreq), dtype=np.float32)
        buf[: len(self._blink_carry)] += self._blink_carry
        for _ in range(rng.poisson(p.blink_rate_hz * n / self.sfreq)):
            at = int(rng.integers(0, n))
            width = int(rng.uniform(0.25, 0.4) * self.sfreq)
            bump = np.sin(np.linspace(0, np.pi, width)) ** 2 * rng.uniform(0.7, 1.3)
            buf[at : at + width] += (bump * p.blink_rel * self.sensor_rms).astype(np.float32)
        self._blink_carry = buf[n:].copy()
        return buf[:n]


def _unit_impulse(n: int) -> np.ndarray:
    x = np.zeros(n)
    x[0] = 1.0
    return x
