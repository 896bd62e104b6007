"""The causal preprocessing chain shared by training and serving.

One :class:`Preprocessor` turns raw device samples into model-rate samples, chunk in, chunk out:

1. non-finite samples are held at the channel's last finite value (so an IIR state never turns NaN) and
   flagged; every output sample that depends on a flagged input is NaN, so windows over a gap are dropped
   downstream instead of being filled with made-up data;
2. IIR band-pass (+ band-stop notches) as second-order sections designed by ``mne.filter`` with
   ``phase='forward'`` (causal), state carried across chunks and initialised at steady state for the first
   sample (no start-up transient);
3. resampling to the model rate: integer decimation (the band-pass is the anti-alias filter) or a stateful
   polyphase FIR for rational ratios; output timestamps are exact input timestamps (decimation) or the
   nominal times of the output grid (polyphase);
4. per-channel robust scaling (median / IQR fitted on training or calibration data) and clamping.

Its output does not depend on how the input was chunked, so the dataset loaders run the very same object
over a whole recording (:func:`preprocess_recording`) and the encoder sees in training what it sees live.
Baseline correction is window-level and lives in :mod:`models.windowing`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from scipy import signal

from brainstream.models.channels import match_channels
from brainstream.models.config_base import StrictModel

logger = logging.getLogger(__name__)

__all__ = [
    "PreprocessingConfig",
    "Preprocessor",
    "RobustScaler",
    "design_sos",
    "fit_robust_scaler",
    "pick_channels",
    "preprocess_recording",
]


class PreprocessingConfig(StrictModel):
    """Parameters of the causal chain; they travel in the encoder checkpoint.

    Defaults are the THINGS-MEG recipe (0.1–40 Hz, 120 Hz, robust scaling, clamp ±20, baseline on the
    pre-stimulus part) in its causal form.
    """

    l_freq: float | None = Field(default=0.1, gt=0, description="high-pass edge in Hz (None: no high-pass)")
    h_freq: float | None = Field(default=40.0, gt=0, description="low-pass edge in Hz (None: no low-pass)")
    filter_order: int = Field(default=4, ge=1, le=10, description="Butterworth order of the band-pass")
    notch_freqs: list[float] = Field(
        default_factory=list, description="line-noise frequencies to remove (Hz)"
    )
    notch_width: float = Field(
        default=2.0, gt=0, description="notch width in Hz, as mne.filter.notch_filter's notch_widths"
    )
    notch_order: int = Field(default=2, ge=1, le=8, description="Butterworth order of each notch")
    sfreq_out: float | None = Field(default=120.0, gt=0, description="model rate in Hz (None: input rate)")
    robust_scale: bool = Field(default=True, description="divide by per-channel IQR after removing median")
    clamp: float | None = Field(default=20.0, gt=0, description="clip scaled values to ±clamp (None: off)")
    baseline: tuple[float | None, float | None] | None = Field(
        default=(None, 0.0),
        description="event-locked baseline interval in s relative to onset, MNE style (None: no baseline)",
    )

    @model_validator(mode="after")
    def _check_band(self) -> PreprocessingConfig:
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        if self.baseline is not None:
            b0, b1 = self.baseline
            if b0 is not None and b1 is not None and b0 > b1:
                raise ValueError(f"baseline start ({b0}) must not be after its end ({b1})")
        return self


# --------------------------------------------------------------------------------------------------- scaler
class RobustScaler:
    """Per-channel robust scaling: ``(x - median) / IQR``.

    Parameters
    ----------
    center, scale : array of shape (n_channels,) | None
        Statistics; None until :meth:`fit` is called.
    ch_names : list of str | None
        Channel names the statistics belong to (lets a consumer reorder them by name).
    """

    def __init__(
        self,
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        ch_names: Sequence[str] | None = None,
    ) -> None:
        self.center = None if center is None else np.asarray(center, dtype=np.float64).ravel()
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64).ravel()
        self.ch_names = None if ch_names is None else [str(c) for c in ch_names]
        if (self.center is None) != (self.scale is None):
            raise ValueError("RobustScaler needs both center and scale, or neither")
        if self.center is not None:
            if self.center.shape != self.scale.shape:
                raise ValueError(f"center {self.center.shape} and scale {self.scale.shape} differ in shape")
            if not (np.all(np.isfinite(self.center)) and np.all(np.isfinite(self.scale))):
                raise ValueError("RobustScaler statistics must be finite")
            if np.any(self.scale <= 0):
                raise ValueError("RobustScaler scale must be positive for every channel")
            if self.ch_names is not None and len(self.ch_names) != self.center.size:
                raise ValueError(f"{len(self.ch_names)} channel names for {self.center.size} statistics")

    @property
    def is_fitted(self) -> bool:
        return self.center is not None

    @property
    def n_channels(self) -> int:
        self._check_fitted()
        return int(self.center.size)

    def fit(self, data: np.ndarray, ch_names: Sequence[str] | None = None) -> RobustScaler:
        """Fit on ``(n_channels, n_times)`` or ``(n_epochs, n_channels, n_times)``; NaNs are ignored."""
        data = np.asarray(data)
        if data.ndim not in (2, 3):
            raise ValueError(
                f"fit expects (n_ch, n_times) or (n_epochs, n_ch, n_times), got shape {data.shape}"
            )
        flat = np.moveaxis(data, -2, 0).reshape(data.shape[-2], -1).astype(np.float64)
        if flat.shape[1] == 0:
            raise ValueError("cannot fit a RobustScaler on zero samples")
        q25, med, q75 = np.nanpercentile(flat, [25, 50, 75], axis=1)
        if not np.all(np.isfinite(med)):
            bad = np.flatnonzero(~np.isfinite(med)).tolist()
            raise ValueError(f"channels {bad[:10]} have no finite sample to fit a RobustScaler on")
        iqr = q75 - q25
        # a flat channel keeps unit scale (as scikit-learn does) instead of dividing by zero
        iqr[iqr <= np.finfo(np.float64).tiny] = 1.0
        self.center, self.scale = med, iqr
        self.ch_names = None if ch_names is None else [str(c) for c in ch_names]
        return self

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Scale data whose channel axis is the second to last; returns float32 for float32 input."""
        self._check_fitted()
        data = np.asarray(data)
        if data.ndim < 2 or data.shape[-2] != self.center.size:
            raise ValueError(
                f"expected channels on axis -2 with {self.center.size} channels, got shape {data.shape}"
            )
        out = (data - self.center[:, None]) / self.scale[:, None]
        return out.astype(data.dtype if data.dtype.kind == "f" else np.float64, copy=False)

    def reorder(self, ch_names: Sequence[str]) -> RobustScaler:
        """The same statistics for ``ch_names`` (a subset / permutation of this scaler's channels)."""
        self._check_fitted()
        if self.ch_names is None:
            if len(ch_names) != self.center.size:
                raise ValueError(
                    f"scaler has {self.center.size} unnamed channels, cannot map {len(ch_names)} channels"
                )
            return RobustScaler(self.center, self.scale, ch_names)
        idx = pick_channels(self.ch_names, ch_names, what="robust scaler")
        return RobustScaler(self.center[idx], self.scale[idx], ch_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (YAML / JSON safe)."""
        self._check_fitted()
        return {
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
            "ch_names": None if self.ch_names is None else list(self.ch_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustScaler:
        if not isinstance(d, dict) or "center" not in d or "scale" not in d:
            raise ValueError("a RobustScaler dict needs 'center' and 'scale' lists (and optional 'ch_names')")
        extra = set(d) - {"center", "scale", "ch_names"}
        if extra:
            raise ValueError(f"unknown RobustScaler keys {sorted(extra)}; allowed: center, scale, ch_names")
        return cls(d["center"], d["scale"], d.get("ch_names"))

    def _check_fitted(self) -> None:
        if self.center is None:
            raise RuntimeError("RobustScaler is not fitted: call fit() or build it with from_dict()")


def pick_channels(available: Sequence[str], wanted: Sequence[str], what: str = "model") -> np.ndarray:
    """Indices into ``available`` giving ``wanted`` in order; extra channels are ignored, CTF names match
    without their system suffix (:func:`brainstream.models.channels.match_channels`).

    Raises
    ------
    ValueError
        Listing every wanted channel that ``available`` lacks.
    """
    return match_channels(available, wanted, what=what).index


# --------------------------------------------------------------------------------------------------- filters
def _iir_sos(sfreq: float, l_freq: float | None, h_freq: float | None, order: int) -> np.ndarray:
    import mne

    params = {"order": order, "ftype": "butter", "output": "sos"}
    filt = mne.filter.create_filter(
        None, sfreq, l_freq, h_freq, method="iir", iir_params=params, phase="forward", verbose=False
    )
    return np.asarray(filt["sos"], dtype=np.float64)


def design_sos(config: PreprocessingConfig, sfreq_in: float) -> tuple[np.ndarray, np.ndarray]:
    """The IIR stages of the chain as ``(sos_in, sos_out)``: SOS arrays ``(n_sections, 6)`` run at the input
    rate (before resampling) and at the output rate (after it); either may have zero sections.

    Without down-sampling the band-pass and all notches run at the input rate. When down-sampling, each
    filter runs at the lowest rate that represents it: the low-pass (the anti-alias filter) and notches above
    the output Nyquist frequency at the input rate, the high-pass and the other notches at the output rate
    (fewer samples to filter, and a 0.1 Hz high-pass is far better conditioned at 120 Hz than at 1200 Hz).
    For integer decimation, when the low-pass is missing or above 0.4 × the output rate, an 8th-order
    Butterworth low-pass at 0.4 × the output rate is added so that decimation cannot alias (the polyphase
    resampler has its own anti-alias FIR).
    """
    nyq = sfreq_in / 2.0
    sfreq_out = config.sfreq_out or sfreq_in
    down = sfreq_out < sfreq_in
    nyq_low = min(nyq, sfreq_out / 2.0)
    for name, f in (("l_freq", config.l_freq), ("h_freq", config.h_freq)):
        if f is not None and f >= nyq:
            raise ValueError(f"{name}={f} Hz is not below the Nyquist frequency {nyq} Hz of the input")
    if config.l_freq is not None and config.l_freq >= nyq_low:
        raise ValueError(
            f"l_freq={config.l_freq} Hz is not below the Nyquist frequency {nyq_low} Hz of the output"
        )
    at_in: list[np.ndarray] = []
    at_out: list[np.ndarray] = []
    if not down:
        if config.l_freq is not None or config.h_freq is not None:
            at_in.append(_iir_sos(sfreq_in, config.l_freq, config.h_freq, config.filter_order))
    else:
        if config.h_freq is not None:
            at_in.append(_iir_sos(sfreq_in, None, config.h_freq, config.filter_order))
        if config.l_freq is not None:
            at_out.append(_iir_sos(sfreq_out, config.l_freq, None, config.filter_order))
    for f0 in config.notch_freqs:
        # band edges as mne.filter.notch_filter places them (width/2 + half its 1 Hz transition band)
        half = config.notch_width / 2.0 + 0.5
        lo, hi = f0 - half, f0 + half
        if lo <= 0 or hi >= nyq:
            raise ValueError(f"notch at {f0} Hz (±{half} Hz) must lie within (0, {nyq}) Hz")
        # l_freq > h_freq makes mne design a band-stop
        if down and hi < nyq_low:
            at_out.append(_iir_sos(sfreq_out, hi, lo, config.notch_order))
        else:
            at_in.append(_iir_sos(sfreq_in, hi, lo, config.notch_order))
    ratio = Fraction(sfreq_in / sfreq_out).limit_denominator(1000)
    if down and ratio.denominator == 1:
        cutoff = 0.4 * sfreq_out
        if config.h_freq is None or config.h_freq > cutoff:
            logger.info(
                "adding an anti-alias low-pass at %.1f Hz before decimating to %g Hz", cutoff, sfreq_out
            )
            at_in.append(_iir_sos(sfreq_in, None, cutoff, 8))

    def stack(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, 6))

    return stack(at_in), stack(at_out)


class _SosStage:
    """Cascade of second-order sections with per-channel state, started at steady state."""

    def __init__(self, sos: np.ndarray, n_ch: int) -> None:
        self.sos, self.n_ch = sos, n_ch
        self._zi_unit = signal.sosfilt_zi(sos) if len(sos) else None
        self.reset()

    def reset(self) -> None:
        self._zi = None if self._zi_unit is None else np.zeros((len(self.sos), self.n_ch, 2))
        self._started = np.zeros(self.n_ch, dtype=bool)

    def process(self, x: np.ndarray, has_data: np.ndarray | None) -> np.ndarray:
        """Filter ``x`` (n_ch, n) float64; ``has_data``: channels with a real sample in it (None: all)."""
        if self._zi is None or x.shape[1] == 0:
            return x
        fresh = ~self._started
        if fresh.any():
            # steady state for the first real sample (held back to the chunk start): no start-up transient
            self._zi[:, fresh, :] = self._zi_unit[:, None, :] * x[fresh, 0][None, :, None]
            self._started |= fresh if has_data is None else fresh & has_data
        y, self._zi = signal.sosfilt(self.sos, x, axis=-1, zi=self._zi)
        return y


# ------------------------------------------------------------------------------------------------ resamplers
class _Decimator:
    """Keep every ``q``-th sample (global index multiple of q), flagged if any input since the last was."""

    def __init__(self, q: int, n_ch: int) -> None:
        self.q, self.n_ch = q, n_ch
        self.reset()

    def reset(self) -> None:
        self._n_in = 0
        self._pending_nan = np.zeros(self.n_ch, dtype=bool)

    def process(self, x: np.ndarray, ts: np.ndarray, bad: np.ndarray | None) -> tuple[np.ndarray, ...]:
        n = x.shape[1]
        first = (-self._n_in) % self.q
        keep = np.arange(first, n, self.q)
        out, out_ts = x[:, keep], ts[keep]
        flagged = None
        if bad is not None or self._pending_nan.any():
            b = np.zeros_like(x, dtype=bool) if bad is None else bad
            # a kept sample is NaN if any input sample in (previous kept, this kept] was flagged
            csum = np.concatenate([np.zeros((self.n_ch, 1), np.int64), np.cumsum(b, axis=1)], axis=1)
            starts = np.concatenate([[0], keep[:-1] + 1])
            flagged = (csum[:, keep + 1] - csum[:, starts]) > 0
            if keep.size:
                flagged[:, 0] |= self._pending_nan
            tail = b[:, keep[-1] + 1 :] if keep.size else b
            self._pending_nan = (self._pending_nan if not keep.size else False) | tail.any(axis=1)
        self._n_in += n
        return out, out_ts, flagged


class _PolyphaseResampler:
    """Stateful causal rational resampler (up ``p``, FIR, down ``q``) computing only ready outputs.

    Output ``k`` sits at input position ``k*q/p``; it is emitted once that input sample has arrived and is
    stamped with the nominal time of that position. History starts as the first sample repeated (no
    start-up transient).
    """

    def __init__(self, p: int, q: int, n_ch: int, sfreq_in: float, half_len: int = 10) -> None:
        self.p, self.q, self.n_ch, self.sfreq_in = p, q, n_ch, sfreq_in
        n_taps = 2 * half_len * max(p, q) + 1
        h = signal.firwin(n_taps, 1.0 / max(p, q), window=("kaiser", 5.0)) * p
        self.T = -(-n_taps // p)  # taps per phase
        hp = np.zeros(self.T * p)
        hp[:n_taps] = h
        self.H = hp.reshape(self.T, p).T  # H[r, t] = h[r + t*p]
        self.delay_s = (n_taps - 1) / 2.0 / p / sfreq_in
        self.reset()

    def reset(self) -> None:
        self._hist: np.ndarray | None = None  # last T input samples (n_ch, T)
        self._hist_bad = np.zeros((self.n_ch, self.T), dtype=bool)
        self._hist_ts = np.zeros(0)
        self._n_in = 0
        self._k = 0

    def process(self, x: np.ndarray, ts: np.ndarray, bad: np.ndarray | None) -> tuple[np.ndarray, ...]:
        n = x.shape[1]
        if n == 0:
            return np.zeros((self.n_ch, 0)), np.zeros(0), None
        if self._hist is None:
            self._hist = np.repeat(x[:, :1], self.T, axis=1)
        b = np.zeros_like(x, dtype=bool) if bad is None else bad
        buf = np.concatenate([self._hist, x], axis=1)
        buf_bad = np.concatenate([self._hist_bad, b], axis=1)
        n_total = self._n_in + n
        # outputs k with floor(k*q/p) <= n_total - 1
        k_end = ((n_total - 1) * self.p) // self.q + 1
        ks = np.arange(self._k, k_end)
        n_hi = (ks * self.q) // self.p
        r = ks * self.q - n_hi * self.p
        local = n_hi - self._n_in + self.T  # index into buf
        idx = local[:, None] - np.arange(self.T)[None, :]  # (K, T)
        out = np.einsum("ckt,kt->ck", buf[:, idx], self.H[r])
        flagged = buf_bad[:, idx].any(axis=2)
        frac = (ks * self.q / self.p) - n_hi
        all_ts = np.concatenate([self._hist_ts, ts])
        base = all_ts[n_hi - self._n_in + self._hist_ts.size]
        out_ts = base + frac / self.sfreq_in
        self._hist = buf[:, -self.T :]
        self._hist_bad = buf_bad[:, -self.T :]
        self._hist_ts = all_ts[-1:]
        self._n_in, self._k = n_total, k_end
        return out, out_ts, flagged


# --------------------------------------------------------------------------------------------- preprocessor
class Preprocessor:
    """Stateful causal preprocessing, chunk in → chunk out, independent of chunking.

    Parameters
    ----------
    config : PreprocessingConfig
        Filter band, notches, model rate, scaling and clamp.
    ch_names : list of str
        Channels of the data passed to :meth:`process`, in row order.
    sfreq_in : float
        Sampling rate of the input in Hz.
    scaler : RobustScaler | None
        Per-channel statistics, required when ``config.robust_scale`` is on; reordered by name when it
        carries channel names.

    Notes
    -----
    Non-finite input samples are replaced by the channel's last finite value before filtering (so the IIR
    state stays finite and recovers as soon as data are back) and every output sample whose input
    interval contained one is NaN. Consumers drop windows containing NaN. A channel with no finite
    sample yet is started at its first finite sample (steady state, as for the very first sample).
    """

    def __init__(
        self,
        config: PreprocessingConfig,
        ch_names: Sequence[str],
        sfreq_in: float,
        scaler: RobustScaler | None = None,
    ) -> None:
        if not isinstance(config, PreprocessingConfig):
            raise TypeError(f"config must be a PreprocessingConfig, got {type(config).__name__}")
        if not (np.isfinite(sfreq_in) and sfreq_in > 0):
            raise ValueError(f"sfreq_in must be a positive rate in Hz, got {sfreq_in!r}")
        self.config = config
        self.ch_names = [str(c) for c in ch_names]
        if not self.ch_names or len(set(self.ch_names)) != len(self.ch_names):
            raise ValueError("ch_names must be a non-empty list of unique channel names")
        self.sfreq_in = float(sfreq_in)
        self.scaler = self._check_scaler(scaler)
        self.sos_in, self.sos_out = design_sos(config, self.sfreq_in)
        self._stage_in = _SosStage(self.sos_in, len(self.ch_names))
        self._stage_out = _SosStage(self.sos_out, len(self.ch_names))
        self._resampler = self._make_resampler()
        self.reset()

    # --------------------------------------------------------------------------------------------- setup
    def _check_scaler(self, scaler: RobustScaler | None) -> RobustScaler | None:
        if not self.config.robust_scale:
            return None
        if scaler is None or not scaler.is_fitted:
            raise ValueError(
                "robust scaling is on but no fitted RobustScaler was given: pass the checkpoint's / subject "
                "profile's scaler, fit one with fit_robust_scaler(), or set robust_scale: false"
            )
        return scaler.reorder(self.ch_names)

    def _make_resampler(self) -> _Decimator | _PolyphaseResampler | None:
        out = self.config.sfreq_out
        if out is None or abs(out - self.sfreq_in) < 1e-9 * self.sfreq_in:
            return None
        ratio = Fraction(out / self.sfreq_in).limit_denominator(1000)
        if abs(float(ratio) * self.sfreq_in - out) > 1e-6 * out:
            raise ValueError(
                f"cannot resample {self.sfreq_in} Hz to {out} Hz by a ratio of small integers; choose a model"
                " rate that divides the input rate (or is a simple fraction of it)"
            )
        n_ch = len(self.ch_names)
        if ratio.numerator == 1:
            return _Decimator(ratio.denominator, n_ch)
        return _PolyphaseResampler(ratio.numerator, ratio.denominator, n_ch, self.sfreq_in)

    @property
    def sfreq_out(self) -> float:
        """Rate of the output samples in Hz."""
        return float(self.config.sfreq_out or self.sfreq_in)

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    def reset(self) -> None:
        """Forget all state: the next sample starts the filters afresh (steady state at that sample)."""
        n_ch = self.n_channels
        self._stage_in.reset()
        self._stage_out.reset()
        self._started = np.zeros(n_ch, dtype=bool)
        self._last_finite = np.zeros(n_ch)
        if self._resampler is not None:
            self._resampler.reset()
        self.n_in = 0
        self.n_out = 0
        self.n_nonfinite_in = 0

    # ------------------------------------------------------------------------------------------- process
    def process(self, data: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter, resample, scale and clamp one chunk.

        Parameters
        ----------
        data : array, shape (n_channels, n_times)
            Raw samples in the device unit, rows in ``ch_names`` order.
        timestamps : array, shape (n_times,)
            LSL time of each sample (s).

        Returns
        -------
        out : float32 array, shape (n_channels, m)
            Model-rate samples (NaN where the input was non-finite).
        out_ts : float64 array, shape (m,)
            Their timestamps.
        """
        x, ts = self._check_input(data, timestamps)
        x, bad = self._hold_nonfinite(x)
        x = self._stage_in.process(x, None if bad is None else ~bad.all(axis=1))
        if self._resampler is not None:
            x, ts, bad = self._resampler.process(x, ts, bad)
        x = self._stage_out.process(x, None if bad is None else ~bad.all(axis=1))
        if bad is not None:
            x = np.where(bad, np.nan, x)
        if self.scaler is not None:
            x = (x - self.scaler.center[:, None]) / self.scaler.scale[:, None]
        if self.config.clamp is not None:
            np.clip(x, -self.config.clamp, self.config.clamp, out=x)
        self.n_out += x.shape[1]
        return np.ascontiguousarray(x, dtype=np.float32), np.asarray(ts, dtype=np.float64)

    def _check_input(self, data: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(data)
        ts = np.asarray(timestamps, dtype=np.float64).ravel()
        if data.ndim != 2 or data.shape[0] != self.n_channels:
            raise ValueError(
                f"expected data of shape ({self.n_channels} channels, n_times), got {data.shape}; pass "
                "(channels, times) in the preprocessor's channel order"
            )
        if ts.size != data.shape[1]:
            raise ValueError(f"{ts.size} timestamps for {data.shape[1]} samples")
        self.n_in += ts.size
        return data.astype(np.float64, copy=True), ts

    def _hold_nonfinite(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        finite = np.isfinite(x)
        if finite.all():
            if x.shape[1]:
                self._last_finite = x[:, -1].copy()
                self._started[:] = True
            return x, None
        bad = ~finite
        self.n_nonfinite_in += int(bad.any(axis=0).sum())
        # forward-fill each channel from its last finite value (carried across chunks)
        idx = np.where(finite, np.arange(x.shape[1])[None, :], -1)
        np.maximum.accumulate(idx, axis=1, out=idx)
        prev = np.where(idx >= 0, x[np.arange(x.shape[0])[:, None], np.maximum(idx, 0)], np.nan)
        prev = np.where(idx >= 0, prev, self._last_finite[:, None])
        # channels never started take their first finite value in this chunk (steady-state start)
        fresh = ~self._started & finite.any(axis=1)
        if fresh.any():
            first = np.argmax(finite[fresh], axis=1)
            first_val = x[np.flatnonzero(fresh), first]
            lead = np.arange(x.shape[1])[None, :] < first[:, None]
            prev[fresh] = np.where(lead, first_val[:, None], prev[fresh])
            self._started |= fresh
        x = np.where(finite, x, prev)
        if x.shape[1]:
            self._last_finite = x[:, -1].copy()
        return x, bad

    @property
    def group_delay_s(self) -> float:
        """Delay of the resampler FIR (0 for decimation); the IIR delay depends on frequency."""
        return float(getattr(self._resampler, "delay_s", 0.0))


# ---------------------------------------------------------------------------------------------- recordings
def preprocess_recording(
    data: np.ndarray,
    timestamps: np.ndarray,
    ch_names: Sequence[str],
    sfreq: float,
    config: PreprocessingConfig,
    scaler: RobustScaler | None = None,
    chunk_seconds: float = 10.0,
    progress: bool = False,
    n_jobs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the online chain over a whole recording, chunk by chunk (what the dataset loaders call).

    Parameters
    ----------
    data : array, shape (n_channels, n_times)
    timestamps : array, shape (n_times,)
    ch_names, sfreq, config, scaler
        As for :class:`Preprocessor`.
    chunk_seconds : float
        Chunk length; the output does not depend on it (tested), it only bounds memory.
    progress : bool
        Show a tqdm progress bar.
    n_jobs : int
        Threads, each running its own :class:`Preprocessor` on a group of channels (channels are filtered
        independently, so the result is the same; scipy's filters release the GIL).

    Returns
    -------
    out : float32 array, shape (n_channels, m)
    out_ts : float64 array, shape (m,)
    """
    data = np.asarray(data)
    ch_names = [str(c) for c in ch_names]
    if data.ndim != 2 or data.shape[0] != len(ch_names):
        raise ValueError(f"expected data of shape ({len(ch_names)} channels, n_times), got {data.shape}")
    ts = np.asarray(timestamps, dtype=np.float64).ravel()
    if ts.size != data.shape[1]:
        raise ValueError(f"{ts.size} timestamps for {data.shape[1]} samples")
    groups = [
        g for g in np.array_split(np.arange(len(ch_names)), max(1, min(n_jobs, len(ch_names)))) if g.size
    ]
    if config.robust_scale and scaler is not None and scaler.is_fitted:
        scaler = scaler.reorder(ch_names)  # names the statistics, so channel groups can pick theirs
    # built here, not in the threads: mne's filter design toggles a process-wide log level
    pres = [Preprocessor(config, [ch_names[i] for i in g], sfreq, scaler) for g in groups]
    if len(groups) == 1:
        return _run_chunks(pres[0], data, ts, chunk_seconds, progress)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [
            pool.submit(_run_chunks, pre, data[g], ts, chunk_seconds, progress and k == 0)
            for k, (pre, g) in enumerate(zip(pres, groups, strict=True))
        ]
        parts = [f.result() for f in futures]
    return np.concatenate([p[0] for p in parts], axis=0), parts[0][1]


def _run_chunks(
    pre: Preprocessor, data: np.ndarray, ts: np.ndarray, chunk_seconds: float, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    n = data.shape[1]
    step = max(1, int(round(chunk_seconds * pre.sfreq_in)))
    starts = range(0, n, step)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="preprocessing", unit="chunk")
    outs, tss = [], []
    for s in starts:
        o, t = pre.process(data[:, s : s + step], ts[s : s + step])
        outs.append(o)
        tss.append(t)
    if not outs:
        return np.zeros((pre.n_channels, 0), np.float32), np.zeros(0)
    return np.concatenate(outs, axis=1), np.concatenate(tss)


def fit_robust_scaler(
    data: np.ndarray,
    timestamps: np.ndarray,
    ch_names: Sequence[str],
    sfreq: float,
    config: PreprocessingConfig,
    mask: np.ndarray | None = None,
) -> RobustScaler:
    """Fit the scaler on the chain's own filtered, resampled output (before scaling and clamping).

    ``mask`` (boolean over the OUTPUT samples) restricts the fit, e.g. to training segments.
    """
    raw_cfg = config.model_copy(update={"robust_scale": False, "clamp": None})
    out, _ = preprocess_recording(data, timestamps, ch_names, sfreq, raw_cfg)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (out.shape[1],):
            raise ValueError(f"mask must have one entry per output sample ({out.shape[1]}), got {mask.shape}")
        out = out[:, mask]
    return RobustScaler().fit(out, ch_names=ch_names)
