"""Train/serve parity: the online windower, fed in random chunks, cuts exactly the offline epochs."""

from __future__ import annotations

import numpy as np
import pytest

from models.events import format_stimulus_marker
from models.preprocessing import PreprocessingConfig, RobustScaler, fit_robust_scaler, preprocess_recording
from models.windowing import WindowSpec, cut_epochs, sliding_windows
from realtime.decoder.online import OnlineWindower

SFREQ = 1200.0
CH = [f"C{i}" for i in range(6)]


def _recording(seconds=12.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    t0 = 1000.0
    ts = t0 + np.arange(n) / SFREQ
    data = rng.standard_normal((len(CH), n)).cumsum(axis=1) * 1e-3 + rng.standard_normal((len(CH), n))
    onsets = t0 + np.arange(1.0, seconds - 1.6, 0.9) + rng.uniform(0, 0.05, size=1)
    return data, ts, onsets


def _config():
    return PreprocessingConfig(
        l_freq=0.5, h_freq=40.0, sfreq_out=120.0, robust_scale=True, clamp=20.0, baseline=(None, 0.0)
    )


def _feed(win: OnlineWindower, data, ts, onsets, rng):
    out, i, k = [], 0, 0
    while i < ts.size:
        n = int(rng.integers(1, 60))
        while k < onsets.size and onsets[k] <= ts[min(i + n, ts.size) - 1]:
            win.push_marker(onsets[k], format_stimulus_marker("train", f"img{k}"))
            k += 1
        win.push_samples(data[:, i : i + n], ts[i : i + n])
        out.extend(win.ready(now=ts[min(i + n, ts.size) - 1]))
        i += n
    return out


def test_event_windows_equal_offline_epochs():
    data, ts, onsets = _recording()
    config = _config()
    scaler = fit_robust_scaler(data, ts, CH, SFREQ, config)
    spec = WindowSpec(-0.2, 0.8, 120.0)
    # stream carries an extra channel and another order: the windower picks the model's channels by name
    stream_names = ["EXTRA", *CH[::-1]]
    stream_data = np.vstack([np.zeros((1, ts.size)), data[::-1]])
    win = OnlineWindower(stream_names, SFREQ, CH, config, spec, scaler=scaler)
    online = _feed(win, stream_data, ts, onsets, np.random.default_rng(1))

    pre, pre_ts = preprocess_recording(data, ts, CH, SFREQ, config, scaler)
    offline = cut_epochs(pre, pre_ts, onsets, spec, baseline=config.baseline)
    assert len(online) == offline.X.shape[0] == onsets.size
    for w, x, t_last, k in zip(online, offline.X, offline.t_last, range(onsets.size), strict=True):
        assert w.image_id == f"img{k}" and w.split == "train" and w.kind == "event"
        np.testing.assert_allclose(w.data, x, rtol=1e-5, atol=1e-5)
        assert w.t_sample == t_last
    assert win.stats.dropped_windows == 0


def test_sliding_windows_equal_offline_grid():
    data, ts, _ = _recording(seconds=6.0)
    config = _config().model_copy(update={"robust_scale": False, "baseline": None})
    spec = WindowSpec(0.0, 0.5, 120.0)
    win = OnlineWindower(CH, SFREQ, CH, config, spec, mode="sliding", stride_s=0.05)
    rng = np.random.default_rng(2)
    online, i = [], 0
    while i < ts.size:  # chunks shorter than the stride, so no window is skipped
        n = int(rng.integers(1, 50))
        win.push_samples(data[:, i : i + n], ts[i : i + n])
        online.extend(win.ready())
        i += n
    pre, pre_ts = preprocess_recording(data, ts, CH, SFREQ, config)
    offline = sliding_windows(pre, pre_ts, spec, stride=6)
    assert len(online) == offline.X.shape[0] > 50
    for w, x, t in zip(online, offline.X, offline.t_last, strict=True):
        np.testing.assert_allclose(w.data, x, rtol=1e-5, atol=1e-6)
        assert w.t_sample == t


def test_missing_model_channels_are_listed_and_bad_rate_refused():
    config = _config().model_copy(update={"robust_scale": False})
    spec = WindowSpec(-0.2, 0.8, 120.0)
    with pytest.raises(ValueError, match="C4, C5"):
        OnlineWindower(CH[:4], SFREQ, CH, config, spec)
    with pytest.raises(ValueError, match="resample"):
        OnlineWindower(CH, 1013.7, CH, config, spec)


def test_nan_window_is_dropped_and_counted_and_late_window_expires():
    data, ts, onsets = _recording(seconds=6.0)
    data[2, 2000:2010] = np.nan  # inside the first event's window
    config = _config().model_copy(update={"robust_scale": False})
    spec = WindowSpec(-0.2, 0.8, 120.0)
    win = OnlineWindower(CH, SFREQ, CH, config, spec, scaler=RobustScaler(), max_wait_s=0.5)
    win.push_marker(ts[2000] - 0.3, "train/nan_img")
    win.push_samples(data, ts)
    assert win.ready(now=ts[-1]) == []
    assert win.stats.dropped_nan == 1
    win.push_marker(ts[-1] + 10.0, "test/never_arrives")
    win.push_marker(ts[-1], "run_start")
    assert win.ready(now=ts[-1] + 20.0) == []
    assert win.stats.dropped_late == 1 and win.stats.ignored_markers == 1
