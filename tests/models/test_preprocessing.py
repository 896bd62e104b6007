"""The causal preprocessing chain: chunking invariance, correctness against mne/scipy, NaN handling."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from scipy import signal

from brainstream.models.config_base import ConfigError, validate_config
from brainstream.models.preprocessing import (
    PreprocessingConfig,
    Preprocessor,
    RobustScaler,
    fit_robust_scaler,
    pick_channels,
    preprocess_recording,
)

IIR = {"order": 4, "ftype": "butter", "output": "sos"}


def _recording(sfreq: float, seconds: float, n_ch: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = rng.standard_normal((n_ch, n)) * 0.5
    x += np.sin(2 * np.pi * 7.0 * t) + 0.8 * np.sin(2 * np.pi * 50.0 * t)  # signal + line noise
    x += rng.uniform(-5, 5, (n_ch, 1))  # DC offsets
    ts = 1000.0 + t  # LSL clock does not start at 0
    return x * 1e-3, ts, [f"CH{i:03d}" for i in range(n_ch)]


def _run_chunked(pre: Preprocessor, x: np.ndarray, ts: np.ndarray, rng: np.random.Generator):
    outs, tss, s = [], [], 0
    while s < x.shape[1]:
        n = int(rng.choice([0, 1, 2, 3, 7, 13, 64, 250, 1111]))
        o, t = pre.process(x[:, s : s + n], ts[s : s + n])
        outs.append(o)
        tss.append(t)
        s += n
    return np.concatenate(outs, axis=1), np.concatenate(tss)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize(
    ("sfreq", "sfreq_out", "notch"),
    [(1200.0, 120.0, [50.0]), (1000.0, 120.0, []), (1000.0, None, [50.0, 100.0])],
    ids=["decimate-1200-120", "polyphase-1000-120", "no-resample"],
)
def test_random_chunking_equals_one_call(sfreq, sfreq_out, notch):
    x, ts, names = _recording(sfreq, 12.0)
    # non-finite samples must not break invariance either
    x[1, 3000:3050] = np.nan
    x[2, 5000] = np.inf
    cfg = PreprocessingConfig(l_freq=0.1, h_freq=40.0, notch_freqs=notch, sfreq_out=sfreq_out, clamp=20.0)
    scaler = fit_robust_scaler(x, ts, names, sfreq, cfg)
    one, one_ts = Preprocessor(cfg, names, sfreq, scaler).process(x, ts)
    assert one.dtype == np.float32 and one.shape[1] > 0
    for seed in range(3):
        chunked, chunked_ts = _run_chunked(
            Preprocessor(cfg, names, sfreq, scaler), x, ts, np.random.default_rng(seed)
        )
        assert chunked.shape == one.shape
        np.testing.assert_array_equal(np.isnan(chunked), np.isnan(one))
        ok = np.isfinite(one)
        assert _rel_err(chunked[ok], one[ok]) <= 1e-6
        np.testing.assert_allclose(chunked_ts, one_ts, rtol=0, atol=1e-9)


def test_band_pass_and_notch_match_mne_forward_filtering():
    sfreq = 1000.0
    x, ts, names = _recording(sfreq, 60.0, n_ch=2)
    cfg = PreprocessingConfig(
        l_freq=0.1, h_freq=40.0, notch_freqs=[50.0], sfreq_out=None, robust_scale=False, clamp=None
    )
    out, out_ts = Preprocessor(cfg, names, sfreq).process(x, ts)
    ref = mne.filter.filter_data(
        x, sfreq, 0.1, 40.0, method="iir", iir_params=IIR, phase="forward", verbose=False
    )
    ref = mne.filter.notch_filter(
        ref,
        sfreq,
        [50.0],
        notch_widths=2.0,
        method="iir",
        iir_params={**IIR, "order": 2},
        phase="forward",
        verbose=False,
    )
    np.testing.assert_array_equal(out_ts, ts)
    # mne pads the start (its own transient); after it has decayed both filters agree
    tail = slice(45_000, None)
    assert _rel_err(out[:, tail], ref[:, tail]) < 1e-3
    # and the band is right: 7 Hz kept, 50 Hz line noise removed
    f, pxx = signal.welch(out[:, tail], sfreq, nperseg=4000)
    f, pxx_in = signal.welch(x[:, tail], sfreq, nperseg=4000)
    gain = pxx / pxx_in
    assert np.all(gain[:, np.argmin(np.abs(f - 7.0))] > 0.8)
    assert np.all(gain[:, np.argmin(np.abs(f - 50.0))] < 1e-3)


def test_decimating_chain_matches_mne_low_pass_decimate_high_pass():
    """Down-sampling runs the low-pass (anti-alias) at the input rate, the high-pass and in-band notches at
    the model rate: same as mne doing those steps offline."""
    sfreq, q = 1200.0, 10
    x, ts, names = _recording(sfreq, 80.0, n_ch=2)
    cfg = PreprocessingConfig(
        l_freq=0.1, h_freq=40.0, notch_freqs=[50.0], sfreq_out=sfreq / q, robust_scale=False, clamp=None
    )
    pre = Preprocessor(cfg, names, sfreq)
    assert len(pre.sos_in) == 2 and len(pre.sos_out) == 2 + 2  # LP | HP + 50 Hz notch (50 < 60 Hz)
    out, out_ts = pre.process(x, ts)
    kw = {"method": "iir", "phase": "forward", "verbose": False}
    ref = mne.filter.filter_data(x, sfreq, None, 40.0, iir_params=IIR, **kw)[:, ::q]
    ref = mne.filter.filter_data(ref, sfreq / q, 0.1, None, iir_params=IIR, **kw)
    ref = mne.filter.notch_filter(
        ref, sfreq / q, [50.0], notch_widths=2.0, iir_params={**IIR, "order": 2}, **kw
    )
    np.testing.assert_array_equal(out_ts, ts[::q])
    tail = slice(6000, None)  # mne's padding transient of the 0.1 Hz high-pass has decayed after 50 s
    assert _rel_err(out[:, tail], ref[:, tail]) < 1e-3


def test_no_start_up_transient_on_a_dc_offset():
    sfreq = 1200.0
    n = 2400
    x = np.full((3, n), 1e-3) + np.arange(3)[:, None] * 5e-3  # pure DC, large against the signal scale
    cfg = PreprocessingConfig(l_freq=0.1, h_freq=40.0, sfreq_out=None, robust_scale=False, clamp=None)
    pre = Preprocessor(cfg, ["a", "b", "c"], sfreq)
    out, _ = pre.process(x, np.arange(n) / sfreq)
    assert np.max(np.abs(out)) < 1e-9
    # a filter started from rest rings for seconds on the same input
    rest = signal.sosfilt(pre.sos_in, x, axis=-1)
    assert np.max(np.abs(rest)) > 1e-4
    # the same with decimation: the high-pass after the decimator starts at steady state too
    cfg = cfg.model_copy(update={"sfreq_out": 120.0})
    out, _ = Preprocessor(cfg, ["a", "b", "c"], sfreq).process(x, np.arange(n) / sfreq)
    assert np.max(np.abs(out)) < 1e-9


def test_decimation_keeps_exact_timestamps_and_rate():
    sfreq = 1200.0
    x, ts, names = _recording(sfreq, 3.0)
    ts = ts + np.random.default_rng(1).normal(0, 1e-5, ts.size)  # jittery LSL timestamps are kept as they are
    cfg = PreprocessingConfig(sfreq_out=120.0, robust_scale=False)
    pre = Preprocessor(cfg, names, sfreq)
    assert pre.sfreq_out == 120.0
    out, out_ts = pre.process(x, ts)
    np.testing.assert_array_equal(out_ts, ts[::10])
    assert out.shape == (4, 360)


def test_polyphase_resampling_preserves_a_sine_with_known_delay():
    sfreq, sfreq_out, f0 = 1000.0, 120.0, 5.0
    t = np.arange(int(8 * sfreq)) / sfreq
    x = np.sin(2 * np.pi * f0 * t)[None, :]
    cfg = PreprocessingConfig(l_freq=None, h_freq=None, sfreq_out=sfreq_out, robust_scale=False, clamp=None)
    pre = Preprocessor(cfg, ["a"], sfreq)
    out, out_ts = pre.process(x, t)
    assert out.shape[1] == pytest.approx(8 * sfreq_out, abs=1)
    np.testing.assert_allclose(np.diff(out_ts), 1 / sfreq_out, atol=1e-9)
    expected = np.sin(2 * np.pi * f0 * (out_ts - pre.group_delay_s))
    settled = out_ts > 1.0
    assert np.max(np.abs(out[0, settled] - expected[settled])) < 1e-2


def test_nan_input_does_not_poison_the_filter():
    sfreq = 1200.0
    x, ts, names = _recording(sfreq, 30.0)
    clean = x.copy()
    x[0, 6000:6600] = np.nan  # half a second of dropout on one channel
    cfg = PreprocessingConfig(l_freq=0.1, h_freq=40.0, sfreq_out=120.0, robust_scale=False, clamp=None)
    out, out_ts = Preprocessor(cfg, names, sfreq).process(x, ts)
    ref, _ = Preprocessor(cfg, names, sfreq).process(clean, ts)
    nan_t = out_ts[np.isnan(out[0])]
    # exactly the output samples whose input interval had a NaN are NaN
    assert nan_t.min() >= ts[6000] and nan_t.max() <= ts[6600] + 1 / 120
    assert np.all(np.isfinite(out[1:]))
    np.testing.assert_array_equal(out[1:], ref[1:])
    # the filter recovers: long after the gap the output approaches the gap-free run again
    late = out_ts > ts[6600] + 20.0
    assert np.all(np.isfinite(out[0, late]))
    assert np.max(np.abs(out[0, late] - ref[0, late])) < 0.05 * np.max(np.abs(ref[0]))


def test_channel_that_starts_as_nan_is_started_at_its_first_sample():
    sfreq = 1000.0
    n = 3000
    x = np.full((2, n), 2e-3)
    x[1, :1500] = np.nan
    cfg = PreprocessingConfig(l_freq=1.0, h_freq=40.0, sfreq_out=None, robust_scale=False, clamp=None)
    pre = Preprocessor(cfg, ["a", "b"], sfreq)
    out1, _ = pre.process(x[:, :1000], np.arange(1000) / sfreq)
    out2, _ = pre.process(x[:, 1000:], np.arange(1000, n) / sfreq)
    out = np.concatenate([out1, out2], axis=1)
    assert np.all(np.isnan(out[1, :1500]))
    assert np.max(np.abs(out[1, 1500:])) < 1e-9  # steady state from its first real sample, no transient
    assert pre.n_nonfinite_in == 1500


def test_robust_scaling_and_clamp():
    sfreq = 1200.0
    x, ts, names = _recording(sfreq, 10.0)
    cfg = PreprocessingConfig(sfreq_out=120.0, clamp=3.0)
    scaler = fit_robust_scaler(x, ts, names, sfreq, cfg)
    out, _ = preprocess_recording(x, ts, names, sfreq, cfg, scaler, chunk_seconds=0.37)
    assert np.max(np.abs(out)) <= 3.0 + 1e-6
    unclamped, _ = preprocess_recording(x, ts, names, sfreq, cfg.model_copy(update={"clamp": None}), scaler)
    q25, med, q75 = np.percentile(unclamped, [25, 50, 75], axis=1)
    np.testing.assert_allclose(med, 0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1, atol=1e-5)


def test_threaded_recording_equals_single_thread():
    sfreq = 1200.0
    x, ts, names = _recording(sfreq, 5.0, n_ch=7)
    x[2, 100:200] = np.nan
    cfg = PreprocessingConfig(notch_freqs=[50.0, 100.0], sfreq_out=120.0)
    scaler = fit_robust_scaler(x, ts, names, sfreq, cfg)
    one, one_ts = preprocess_recording(x, ts, names, sfreq, cfg, scaler)
    unnamed = RobustScaler(scaler.center, scaler.scale)  # statistics in channel order, without names
    three, three_ts = preprocess_recording(x, ts, names, sfreq, cfg, unnamed, n_jobs=3)
    np.testing.assert_array_equal(three, one)
    np.testing.assert_array_equal(three_ts, one_ts)
    with pytest.raises(ValueError, match="4 timestamps for"):
        preprocess_recording(x, ts[:4], names, sfreq, cfg, scaler)


def test_robust_scaler_roundtrip_reorder_and_errors():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 3, 100)) * np.array([1.0, 2.0, 3.0])[:, None] + 4
    data[:, 2] = 7.0  # flat channel keeps unit scale
    sc = RobustScaler().fit(data, ch_names=["a", "b", "c"])
    assert sc.scale[2] == 1.0 and sc.center[2] == 7.0
    back = RobustScaler.from_dict(sc.to_dict())
    np.testing.assert_array_equal(back.transform(data), sc.transform(data))
    assert back.transform(data.astype(np.float32)).dtype == np.float32
    r = sc.reorder(["c", "a"])
    np.testing.assert_array_equal(r.center, sc.center[[2, 0]])
    with pytest.raises(ValueError, match="lacks 1 of them: zz"):
        sc.reorder(["a", "zz"])
    with pytest.raises(ValueError, match="unknown RobustScaler keys"):
        RobustScaler.from_dict({"center": [0.0], "scale": [1.0], "mean": [1]})
    with pytest.raises(ValueError, match="positive"):
        RobustScaler([0.0], [0.0])
    with pytest.raises(RuntimeError, match="not fitted"):
        RobustScaler().transform(data)


def test_preprocessor_reorders_a_named_scaler():
    sfreq = 1200.0
    x, ts, names = _recording(sfreq, 4.0)
    cfg = PreprocessingConfig(sfreq_out=120.0)
    sc = fit_robust_scaler(x, ts, names, sfreq, cfg)
    perm = [2, 0, 3, 1]
    a, _ = Preprocessor(cfg, names, sfreq, sc).process(x, ts)
    b, _ = Preprocessor(cfg, [names[i] for i in perm], sfreq, sc).process(x[perm], ts)
    np.testing.assert_allclose(b, a[perm], rtol=1e-6)


def test_bad_configuration_and_input_give_clear_errors():
    with pytest.raises(ConfigError, match="l_freq"):
        validate_config({"l_freq": 50.0, "h_freq": 40.0}, PreprocessingConfig, "pre.yaml")
    with pytest.raises(ConfigError, match="unknown key 'lowpass'"):
        validate_config({"lowpass": 40.0}, PreprocessingConfig, "pre.yaml")
    with pytest.raises(ValueError, match="no fitted RobustScaler"):
        Preprocessor(PreprocessingConfig(), ["a"], 1200.0)
    with pytest.raises(ValueError, match="Nyquist"):
        Preprocessor(PreprocessingConfig(h_freq=200.0, robust_scale=False), ["a"], 250.0)
    with pytest.raises(ValueError, match="ratio of small integers"):
        Preprocessor(PreprocessingConfig(sfreq_out=119.7331, robust_scale=False), ["a"], 1200.0)
    pre = Preprocessor(PreprocessingConfig(robust_scale=False), ["a", "b"], 1200.0)
    with pytest.raises(ValueError, match=r"expected data of shape \(2 channels"):
        pre.process(np.zeros((3, 10)), np.zeros(10))
    with pytest.raises(ValueError, match="9 timestamps for 10 samples"):
        pre.process(np.zeros((2, 10)), np.zeros(9))


def test_pick_channels_reorders_ignores_extras_and_lists_missing():
    idx = pick_channels(["x", "b", "a", "c"], ["a", "b"])
    np.testing.assert_array_equal(idx, [2, 1])
    with pytest.raises(ValueError, match="lacks 2 of them: d, e"):
        pick_channels(["a", "b"], ["a", "d", "e"])


def test_antialias_low_pass_added_when_band_does_not_cover_decimation():
    sfreq = 1000.0
    t = np.arange(int(4 * sfreq)) / sfreq
    x = np.sin(2 * np.pi * 110.0 * t)[None, :]  # aliases to 10 Hz at 100 Hz if not removed
    cfg = PreprocessingConfig(l_freq=None, h_freq=None, sfreq_out=100.0, robust_scale=False, clamp=None)
    out, _ = Preprocessor(cfg, ["a"], sfreq).process(x, t)
    assert np.max(np.abs(out[0, 100:])) < 1e-2
