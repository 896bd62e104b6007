"""Window cutting: exact sample choice, online == offline, late/missing/NaN windows reported, sliding grid."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from brainstream.models.preprocessing import (
    PreprocessingConfig,
    Preprocessor,
    fit_robust_scaler,
    preprocess_recording,
)
from brainstream.models.windowing import (
    WindowSpec,
    WindowStatus,
    baseline_correct,
    cut_epochs,
    cut_window,
    locate_window,
    sliding_window_ends,
    sliding_windows,
)


def _raw(sfreq: float = 1200.0, seconds: float = 20.0, n_ch: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    x = rng.standard_normal((n_ch, n)).cumsum(axis=1) * 1e-4 + rng.standard_normal((n_ch, n)) * 1e-3
    ts = 500.0 + np.arange(n) / sfreq
    return x, ts, [f"MEG{i:03d}" for i in range(n_ch)]


def test_window_spec_sizes():
    assert WindowSpec(-0.5, 1.0, 120.0).n_times == 180  # THINGS-MEG brain module input
    assert WindowSpec(0.0, 1.0, 250.0).n_times == 250  # ATM-S input
    np.testing.assert_allclose(WindowSpec(-0.5, 1.0, 120.0).times[:2], [-0.5, -0.5 + 1 / 120])
    with pytest.raises(ValueError, match="tmin < tmax"):
        WindowSpec(1.0, 0.5, 120.0)
    with pytest.raises(ValueError, match="positive rate"):
        WindowSpec(0.0, 1.0, 0.0)


def test_cut_epochs_equals_mne_epochs_on_the_same_samples():
    sf = 120.0
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4, 2400)).astype(np.float32)
    ts = 10.0 + np.arange(2400) / sf
    spec = WindowSpec(-0.5, 1.0, sf)
    onsets = np.sort(ts[0] + rng.uniform(1.0, 17.0, 12))
    res = cut_epochs(data, ts, onsets, spec, baseline=(None, 0.0))
    assert res.X.shape == (12, 4, 180) and res.n_dropped == 0
    info = mne.create_info(4, sf, "eeg")  # a data type: mne baselines data channels only
    raw = mne.io.RawArray(data.astype(np.float64), info, verbose=False)
    events = np.c_[np.round((onsets - ts[0]) * sf).astype(int), np.zeros(12, int), np.ones(12, int)]
    ep = mne.Epochs(
        raw, events, tmin=-0.5, tmax=1.0 - 1 / sf, baseline=(None, 0.0), picks="all", verbose=False
    )
    np.testing.assert_allclose(res.X, ep.get_data(), rtol=1e-5, atol=1e-6)


def test_sample_choice_is_nearest_to_onset_plus_tmin():
    sf = 100.0
    ts = np.arange(1000) / sf
    data = np.arange(1000, dtype=np.float32)[None, :]
    spec = WindowSpec(-0.1, 0.2, sf)
    for onset, first in [(1.0, 90), (1.004, 90), (1.006, 91), (1.0149, 91)]:
        w = cut_window(data, ts, onset, spec)
        assert w.ok and w.start == first and w.data[0, 0] == first
        assert w.t_last == pytest.approx(ts[first + 29])


def test_late_missing_and_nan_windows_are_reported_not_padded():
    sf = 100.0
    ts = np.arange(500) / sf
    data = np.ones((2, 500), np.float32)
    spec = WindowSpec(0.0, 1.0, sf)
    late = cut_window(data, ts, 4.5, spec)  # needs samples up to 5.49 s, data end at 4.99 s
    assert late.status is WindowStatus.LATE and late.data is None
    assert cut_window(data, ts, -0.5, spec).status is WindowStatus.MISSING  # before the data
    gap_ts = np.delete(ts, np.s_[200:205])
    gap = cut_window(np.delete(data, np.s_[200:205], axis=1), gap_ts, 1.5, spec)
    assert gap.status is WindowStatus.MISSING and "gap" in gap.reason
    nan_data = data.copy()
    nan_data[1, 130] = np.nan
    assert cut_window(nan_data, ts, 1.0, spec).status is WindowStatus.NAN
    res = cut_epochs(nan_data, ts, [0.2, 1.0, 4.5, 2.0], spec)
    assert res.kept.tolist() == [0, 3]
    assert res.counts() == {"ok": 2, "late": 1, "missing": 0, "nan": 1}
    with pytest.raises(ValueError, match="late"):
        _ = late.t_last


def test_baseline_correction():
    spec = WindowSpec(-0.5, 1.0, 120.0)
    rng = np.random.default_rng(0)
    win = rng.standard_normal((3, 180)) + 5.0
    out = baseline_correct(win, spec, (None, 0.0))
    np.testing.assert_allclose(out[:, :61].mean(axis=1), 0, atol=1e-12)  # samples at t <= 0
    np.testing.assert_array_equal(baseline_correct(win, spec, None), win)
    with pytest.raises(ValueError, match="selects no sample"):
        baseline_correct(win, spec, (2.0, 3.0))


def test_online_windows_equal_offline_epochs():
    """Online: chunks through a Preprocessor into a growing buffer, each window cut as soon as it is
    complete. Offline: preprocess_recording over the whole recording, then cut_epochs. Same windows."""
    sf_in = 1200.0
    x, ts, names = _raw(sf_in, 20.0)
    cfg = PreprocessingConfig(l_freq=0.1, h_freq=40.0, sfreq_out=120.0, clamp=20.0, baseline=(None, 0.0))
    scaler = fit_robust_scaler(x, ts, names, sf_in, cfg)
    spec = WindowSpec(-0.5, 1.0, cfg.sfreq_out)
    rng = np.random.default_rng(7)
    onsets = np.sort(ts[0] + rng.uniform(0.7, 18.5, 15))
    onsets = np.r_[ts[0] + 0.1, onsets]  # this one starts before the data: missing online and offline

    out, out_ts = preprocess_recording(x, ts, names, sf_in, cfg, scaler)
    offline = cut_epochs(out, out_ts, onsets, spec, cfg.baseline)

    pre = Preprocessor(cfg, names, sf_in, scaler)
    buf, buf_ts = np.zeros((len(names), 0), np.float32), np.zeros(0)
    pending = list(range(onsets.size))
    online: dict[int, np.ndarray] = {}
    statuses: dict[int, WindowStatus] = {}
    s = 0
    while s < x.shape[1]:
        n = 12  # 10 ms chunks, as a CTF stream delivers them
        o, t = pre.process(x[:, s : s + n], ts[s : s + n])
        s += n
        buf, buf_ts = np.concatenate([buf, o], axis=1), np.concatenate([buf_ts, t])
        for k in list(pending):
            w = cut_window(buf, buf_ts, onsets[k], spec, cfg.baseline)
            if w.status is WindowStatus.LATE:
                continue
            pending.remove(k)
            statuses[k] = w.status
            if w.ok:
                online[k] = w.data
    assert not pending
    assert statuses[0] is WindowStatus.MISSING
    assert sorted(online) == offline.kept.tolist() and len(online) == 15
    np.testing.assert_allclose(np.stack([online[k] for k in sorted(online)]), offline.X, rtol=1e-6, atol=1e-6)


def test_sliding_window_grid_is_chunking_invariant():
    n_times, stride = 180, 6
    whole = sliding_window_ends(0, 1000, n_times, stride)
    assert whole[0] == 179 and np.all(np.diff(whole) == stride)
    pieces = np.concatenate(
        [sliding_window_ends(a, b, n_times, stride) for a, b in [(0, 1), (1, 180), (180, 185), (185, 1000)]]
    )
    np.testing.assert_array_equal(pieces, whole)


def test_sliding_windows_drop_gaps_and_nans():
    sf = 120.0
    ts = np.arange(600) / sf
    data = np.random.default_rng(0).standard_normal((2, 600)).astype(np.float32)
    data[0, 300] = np.nan
    spec = WindowSpec(0.0, 1.5, sf)
    res = sliding_windows(data, ts, spec, stride=6)
    ends = sliding_window_ends(0, 600, 180, 6)
    assert len(res.statuses) == ends.size
    has_nan = (ends >= 300) & (ends - 179 <= 300)
    assert [s is WindowStatus.NAN for s in res.statuses] == has_nan.tolist()
    np.testing.assert_array_equal(res.X[0], data[:, :180])
    np.testing.assert_array_equal(res.t_last, ts[ends[~has_nan]])


def test_locate_window_tolerates_timestamp_jitter():
    sf = 120.0
    rng = np.random.default_rng(0)
    ts = np.arange(600) / sf + rng.normal(0, 0.05 / sf, 600)
    status, start, _ = locate_window(ts, 2.0, WindowSpec(-0.5, 1.0, sf))
    assert status is WindowStatus.OK and start == 180
