"""Train/serve parity: the online windower, fed in random chunks, cuts exactly the offline epochs."""

from __future__ import annotations

import numpy as np
import pytest

from brainstream.models.events import format_stimulus_marker
from brainstream.models.preprocessing import (
    PreprocessingConfig,
    RobustScaler,
    fit_robust_scaler,
    preprocess_recording,
)
from brainstream.models.windowing import WindowSpec, cut_epochs, sliding_windows
from brainstream.realtime.decoder.online import OnlineWindower

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


# ------------------------------------------------------------------------------------------ incremental path
def _causal_model(n_times: int):
    import torch

    from brainstream.models.encoders import build_encoder

    torch.manual_seed(0)
    arch = {"name": "brain_module", "n_channels": len(CH), "n_times": n_times, "dim": 8, "causal": True,
            "spatial_channels": 6, "fourier_freqs": 3, "hidden": 8, "depth": 2, "out_channels": 12,
            "positions": np.random.default_rng(0).uniform(size=(len(CH), 2)).tolist()}  # fmt: skip
    model = build_encoder(arch).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize(("backend", "eager"), [("torch", False), ("onnxruntime", False), ("torch", True)])
def test_incremental_sliding_equals_full_windows_through_gaps_and_nans(backend, eager):
    """The same chunks through the full path (whole windows + the causal model) and the incremental path:
    the same windows published with the same embeddings, the same drops, and a reset at each gap / NaN."""
    from brainstream.models.incremental import IncrementalEncoder
    from brainstream.models.runtime.torch_runtime import TorchRuntime
    from brainstream.realtime.decoder.incremental import IncrementalSliding

    data, ts, _ = _recording(seconds=8.0)
    data[3, 3000:3004] = np.nan  # a sensor drop-out
    keep = np.ones(ts.size, bool)
    keep[6000:6360] = False  # 0.3 s never arrive: a gap in the timestamps
    data, ts = data[:, keep], ts[keep]
    config = _config().model_copy(update={"robust_scale": False, "baseline": None})
    model = _causal_model(n_times=94)  # context 34 + 60 frames at 120 Hz
    spec = WindowSpec(0.5 - 94 / 120.0, 0.5, 120.0)
    full = OnlineWindower(CH, SFREQ, CH, config, spec, mode="sliding", stride_s=0.05)
    part = OnlineWindower(CH, SFREQ, CH, config, spec, mode="sliding", stride_s=0.05)
    runtime = TorchRuntime(model)
    sliding = IncrementalSliding(part, IncrementalEncoder(model, backend=backend), eager=eager)
    rng = np.random.default_rng(3)
    got, want, i = {}, {}, 0
    while i < ts.size:  # chunks shorter than the stride: no window is skipped as late
        n = int(rng.integers(1, 50))
        for win in (full, part):
            win.push_samples(data[:, i : i + n], ts[i : i + n])
        for w in full.ready():
            want[w.t_sample] = runtime.run(w.data[None])[0]
        for w in sliding.ready():
            got[w.t_sample] = w.embedding
            assert w.t_ready <= w.t_encoded
        i += n
    assert sorted(got) == sorted(want) and len(got) > 80
    for t, emb in want.items():
        np.testing.assert_allclose(got[t], emb, rtol=1e-4, atol=1e-5 * np.abs(emb).max())
    assert part.stats.as_dict() == full.stats.as_dict()
    assert full.stats.dropped_nan > 0 and full.stats.dropped_missing > 0 and full.stats.dropped_late == 0
    assert sliding.resets >= 2  # the gap, and each non-finite model-rate sample


def test_incremental_sliding_refuses_a_mismatched_encoder():
    from brainstream.models.incremental import IncrementalEncoder
    from brainstream.realtime.decoder.incremental import IncrementalSliding

    config = _config().model_copy(update={"robust_scale": False, "baseline": None})
    sliding = OnlineWindower(CH, SFREQ, CH, config, WindowSpec(0.0, 0.5, 120.0), mode="sliding")
    with pytest.raises(ValueError, match="takes windows of 94 samples"):
        IncrementalSliding(sliding, IncrementalEncoder(_causal_model(94)))
    event = OnlineWindower(CH, SFREQ, CH, config, WindowSpec(0.0, 94 / 120.0, 120.0))
    with pytest.raises(ValueError, match="event mode"):
        IncrementalSliding(event, IncrementalEncoder(_causal_model(94)))


def test_incremental_sliding_restarts_after_samples_lost_to_the_buffer():
    """A loop stalled longer than the model-rate buffer: the lost samples break the history, the newest
    window (still whole in the buffer) is published as the full path publishes it."""
    from brainstream.models.incremental import IncrementalEncoder
    from brainstream.models.runtime.torch_runtime import TorchRuntime
    from brainstream.realtime.decoder.incremental import IncrementalSliding

    data, ts, _ = _recording(seconds=8.0)
    config = _config().model_copy(update={"robust_scale": False, "baseline": None})
    model = _causal_model(n_times=94)
    spec = WindowSpec(0.5 - 94 / 120.0, 0.5, 120.0)
    full, part = (OnlineWindower(CH, SFREQ, CH, config, spec, mode="sliding", buffer_s=1.0) for _ in range(2))
    sliding = IncrementalSliding(part, IncrementalEncoder(model))
    for win in (full, part):
        win.push_samples(data[:, :1200], ts[:1200])
    assert len(full.ready()) == len(sliding.ready()) == 1
    for win in (full, part):  # 5 s at once: more than the 376-sample buffer holds
        win.push_samples(data[:, 1200:], ts[1200:])
    (want,), (got,) = full.ready(), sliding.ready()
    assert got.t_sample == want.t_sample and sliding.resets == 1
    np.testing.assert_allclose(
        got.embedding, TorchRuntime(model).run(want.data[None])[0], rtol=1e-4, atol=1e-6
    )
    assert part.stats.as_dict() == full.stats.as_dict() and full.stats.dropped_late > 50


def test_a_real_acquisition_superset_at_another_rate_gives_the_model_channels_with_absent_ones_masked():
    """CTF names with another system suffix among references and stim, at 600 Hz for a 1200 Hz profile: the
    windows are the model's channels resampled to its rate, the absent sensor (missing from the stream)
    and the bad one are zeros (what the masked brain module ignores), the rest equals the offline chain."""
    from brainstream.models.channels import plan_channels

    model_ch = [f"MLC{i}1-1609" for i in range(1, 7)]
    rng = np.random.default_rng(3)
    sfreq = 600.0
    n = int(8 * sfreq)
    ts = 500.0 + np.arange(n) / sfreq
    data = rng.standard_normal((5, n))
    stream_names = ["UPPT001", "BG1-4304", *[c.replace("-1609", "-4304") for c in model_ch[:5]]]
    stream_data = np.vstack([np.zeros((2, n)), data])
    stream_data[2 + 1, 100:200] = np.nan  # the bad sensor's NaNs must not drop windows
    config = PreprocessingConfig(l_freq=0.5, h_freq=40.0, sfreq_out=120.0, robust_scale=False, clamp=None)
    plan = plan_channels(stream_names, model_ch, "mask", bad=["MLC21-4304"], max_missing=0.4)
    assert plan.missing == ["MLC61-1609"] and plan.bad == ["MLC21-1609"]
    spec = WindowSpec(0.0, 0.5, 120.0)
    win = OnlineWindower(
        stream_names, sfreq, model_ch, config, spec, mode="sliding", stride_s=0.5, channels=plan
    )
    got = []
    for i in range(0, n, 37):
        win.push_samples(stream_data[:, i : i + 37], ts[i : i + 37])
        got.extend(win.ready())
    assert len(got) >= 10 and win.stats.dropped_nan == 0
    offline, off_ts = preprocess_recording(data, ts, model_ch[:5], sfreq, config)
    for w in got:
        assert w.data.shape == (6, 60)
        np.testing.assert_array_equal(w.data[[1, 5]], 0.0)
        end = int(np.flatnonzero(np.isclose(off_ts, w.t_sample))[0])
        np.testing.assert_allclose(w.data[[0, 2, 3, 4]], offline[[0, 2, 3, 4], end - 59 : end + 1], atol=1e-5)
    with pytest.raises(ValueError, match="cannot resample 1000.3 Hz to 120.0 Hz"):
        OnlineWindower(stream_names, 1000.3, model_ch, config, spec, mode="sliding", channels=plan)


def test_interpolating_encoders_get_the_ctf_profile_positions_for_their_sensors():
    """A non-brain-module checkpoint on the THINGS CTF-275 profile: the missing sensors of a real site
    (MRF66, MRO52 in mne-testing-data's CTF file) are rebuilt from the layout's neighbours."""
    from types import SimpleNamespace

    from brainstream.models.channels import ChannelRepair
    from brainstream.models.device_profile import load_device_profile
    from brainstream.realtime.decoder.node import model_positions

    profile = load_device_profile("ctf275_things_meg")
    wanted = profile.channels[::-1]  # the checkpoint's own order
    pos = model_positions(SimpleNamespace(ch_names=wanted, positions=None), profile)
    assert pos.shape == (272, 2)
    np.testing.assert_array_equal(pos, profile.positions_2d[::-1])
    repair = ChannelRepair(wanted, ["MRF66-1609", "MRO52-1609"], "interpolate", positions=pos)
    # a smooth field over the helmet: the interpolated sensors follow their neighbours
    field = np.sin(3 * pos[:, :1]) + pos[:, 1:] + np.zeros((1, 4))
    damaged = field.copy()
    damaged[repair.rows] = 1e3
    np.testing.assert_allclose(repair.apply(damaged)[repair.rows], field[repair.rows], atol=0.05)
