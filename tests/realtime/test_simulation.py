"""The virtual subject: physiology of the simulated data, files it writes, live streaming over real LSL.

Everything runs for real: mne forward models (cached under the brainstream cache after the first run), mne
FIF writing and reading, liblsl on loopback. Galleries are small random-embedding ones the tests make.
"""

from __future__ import annotations

import json
import time

import mne
import numpy as np
import pylsl
import pytest
from scipy.signal import butter, sosfiltfilt, welch

from brainstream.cli import main as cli_main
from brainstream.models.device_profile import load_device_profile
from brainstream.models.events import parse_stimulus_marker
from brainstream.models.gallery import Gallery
from brainstream.realtime.lsl_info import make_stream_info
from brainstream.realtime.simulation import (
    LiveSubject,
    RSVPDesign,
    VirtualSubject,
    make_rsvp_schedule,
    simulate_recording,
)
from brainstream.realtime.simulation.forward import load_forward

EEG = "eeg64_1000hz"
MEG = "ctf275_things_meg"


def _random_gallery(n: int = 80, dim: int = 32, seed: int = 0) -> Gallery:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Gallery(emb, [f"img{i:03d}" for i in range(n)], space="test:random:32")


@pytest.fixture(scope="module")
def gallery() -> Gallery:
    return _random_gallery()


@pytest.fixture(scope="module")
def eeg_forward():
    return load_forward(load_device_profile(EEG))


def _bandpass(x: np.ndarray, sfreq: float, lo: float = 1.0, hi: float = 40.0) -> np.ndarray:
    return sosfiltfilt(
        butter(4, (lo, hi), btype="band", fs=sfreq, output="sos"), x.astype(np.float64), axis=-1
    )


def _epochs(x: np.ndarray, sfreq: float, onsets_s, tmin: float, tmax: float) -> np.ndarray:
    starts = (np.asarray(onsets_s) * sfreq).round().astype(int) + int(round(tmin * sfreq))
    n = int(round((tmax - tmin) * sfreq))
    return np.stack([x[:, s : s + n] for s in starts])


# ---------------------------------------------------------------------------------------------- physiology
def test_background_is_1_over_f_with_occipital_alpha_that_desynchronises(gallery, eeg_forward):
    subject = VirtualSubject(EEG, gallery, seed=3, forward=eeg_forward, bad_channel=False)
    sf = subject.sfreq
    rest = subject.generate(int(40 * sf))
    f, psd = welch(rest, fs=sf, nperseg=int(4 * sf), axis=-1)
    # 1/f: log-log slope of the mean spectrum away from alpha and mains
    band = ((f >= 2) & (f <= 7)) | ((f >= 15) & (f <= 40))
    slope = np.polyfit(np.log(f[band]), np.log(psd.mean(0)[band]), 1)[0]
    assert -2.2 < slope < -0.6, slope
    # alpha: a peak above the 1/f trend at occipital sensors, stronger there than frontally
    names = subject.ch_names
    occ = [names.index(c) for c in ("O1", "Oz", "O2", "POz")]
    front = [names.index(c) for c in ("Fp1", "Fp2", "AFz", "F3", "F4")]
    fa = subject.background.alpha_freq
    at_alpha = (f > fa - 1) & (f < fa + 1)
    flank = ((f > fa - 5) & (f < fa - 3)) | ((f > fa + 3) & (f < fa + 5))
    peak_ratio = psd[occ][:, at_alpha].mean() / psd[occ][:, flank].mean()
    assert peak_ratio > 2.0, peak_ratio
    rel = lambda idx: psd[idx][:, at_alpha].mean() / psd[idx][:, flank].mean()  # noqa: E731
    assert rel(occ) > rel(front)
    # desynchronisation: occipital alpha power 0.4-0.9 s after onsets falls below the pre-stimulus level
    start = subject.n_generated / sf
    onsets = start + 1.0 + 2.0 * np.arange(15)
    for i, t in enumerate(onsets):
        subject.add_stimulus(t, t + 0.5, gallery.ids[i])
    x = subject.generate(int(32 * sf))
    alpha = _bandpass(x[occ], sf, fa - 1.5, fa + 1.5) ** 2
    rel_onsets = onsets - start
    pre = _epochs(alpha, sf, rel_onsets, -0.6, -0.1).mean()
    post = _epochs(alpha, sf, rel_onsets, 0.4, 0.9).mean()
    assert post < 0.7 * pre, (post, pre)


def test_evoked_response_in_the_average_at_posterior_meg_sensors(gallery):
    subject = VirtualSubject(MEG, gallery, seed=1)
    assert subject.forward.method == "bem"
    sf = subject.sfreq
    onsets = 1.0 + 1.5 * np.arange(40)
    for i, t in enumerate(onsets):
        subject.add_stimulus(t, t + 0.5, gallery.ids[i % len(gallery.ids)])
    x = _bandpass(subject.generate(int(62 * sf)), sf)
    evoked = _epochs(x, sf, onsets, -0.2, 0.6).mean(0)
    n0 = int(0.2 * sf)
    base_rms = np.sqrt(np.mean(evoked[:, :n0] ** 2))
    resp_rms = np.sqrt(np.mean(evoked[:, n0 + int(0.08 * sf) : n0 + int(0.3 * sf)] ** 2))
    assert resp_rms > 3 * base_rms, (resp_rms, base_rms)
    # strongest over occipital/temporal/parietal sensors, not frontal ones
    peak = np.sqrt(np.mean(evoked[:, n0 + int(0.08 * sf) : n0 + int(0.3 * sf)] ** 2, axis=1))
    top = [subject.ch_names[i][2] for i in np.argsort(peak)[-10:]]
    assert sum(c in "OTP" for c in top) >= 7, top


def test_responses_are_nonlinear_in_the_embedding_and_differ_between_subjects(gallery):
    from brainstream.realtime.simulation.responses import ResponseModel, ResponseParams

    emb = gallery.embeddings
    model = ResponseModel(emb, 200.0, np.random.default_rng(0), ResponseParams())
    amp_a, _ = model.features(emb[0])
    amp_b, _ = model.features(emb[1])
    amp_sum, _ = model.features(emb[0] + emb[1] - model.mean)  # a linear map would give amp_a + amp_b
    assert (amp_a == 0).any() and (amp_a > 0).any()  # rectified: sparse
    assert not np.allclose(amp_sum, amp_a + amp_b, atol=1e-3)
    other = ResponseModel(emb, 200.0, np.random.default_rng(1), ResponseParams())
    assert not np.allclose(other.features(emb[0])[0], amp_a)


def test_generation_is_chunking_invariant_and_seeded(gallery, eeg_forward):
    def run(chunks, seed=5):
        s = VirtualSubject(EEG, gallery, seed=seed, forward=eeg_forward)
        s.add_stimulus(0.5, 1.0, gallery.ids[0])
        s.add_stimulus(1.7, 2.2, gallery.ids[1])
        return np.concatenate([s.generate(n) for n in chunks], axis=1)

    a = run([3000])
    b = run([1, 999, 17, 1283, 700])
    assert a.shape == (64, 3000) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, run([3000], seed=6))


def test_unknown_image_and_bad_arguments_are_refused(gallery, eeg_forward):
    s = VirtualSubject(EEG, gallery, seed=0, forward=eeg_forward)
    with pytest.raises(KeyError, match="not in the gallery"):
        s.add_stimulus(1.0, 1.5, "no-such-image")
    with pytest.raises(ValueError, match="before its onset"):
        s.add_stimulus(1.0, 0.5, gallery.ids[0])
    with pytest.raises(ValueError, match="snr"):
        VirtualSubject(EEG, gallery, snr=-1, forward=eeg_forward)
    with pytest.raises(ValueError, match="distinct images"):
        make_rsvp_schedule(gallery.ids, RSVPDesign(n_train_images=80, n_test_images=10))


# ---------------------------------------------------------------------------------------------- offline
def test_offline_fif_has_profile_channels_annotations_and_metadata(gallery, eeg_forward, tmp_path):
    design = RSVPDesign(n_train_images=12, n_test_images=4, test_repeats=3, image_s=0.3, isi_s=0.4)
    out = tmp_path / "sub-07_raw.fif"
    result = simulate_recording(
        out, profile=EEG, gallery=gallery, seed=7, design=design, progress=False,
        subject_kwargs={"forward": eeg_forward},
    )  # fmt: skip
    raw = mne.io.read_raw_fif(out, preload=True, verbose=False)
    profile = load_device_profile(EEG)
    assert raw.ch_names == profile.channels
    assert raw.info["sfreq"] == profile.sfreq
    assert set(raw.get_channel_types()) == {"eeg"}
    assert raw.get_montage() is not None
    trials = make_rsvp_schedule(gallery.ids, design)
    assert list(raw.annotations.description) == [t.marker for t in trials]
    np.testing.assert_allclose(raw.annotations.onset, [t.onset for t in trials], atol=1.5 / profile.sfreq)
    np.testing.assert_allclose(raw.annotations.duration, 0.3, atol=1e-5)  # float32 in FIF
    events = [parse_stimulus_marker(d) for d in raw.annotations.description]
    train = [e.image_id for e in events if e.split == "train"]
    test = [e.image_id for e in events if e.split == "test"]
    assert len(train) == len(set(train)) == 12
    assert len(set(test)) == 4 and all(test.count(i) == 3 for i in set(test))
    assert not set(train) & set(test)
    meta = json.loads(raw.info["description"])
    assert meta["seed"] == 7 and meta["space"] == gallery.space and meta["snr"] == result.metadata["snr"]
    assert "gallery" in meta and meta["design"]["test_repeats"] == 3
    # the file holds exactly what the generator produces (same seed, same schedule)
    again = VirtualSubject(EEG, gallery, seed=7, forward=eeg_forward)
    for t in trials:
        again.add_stimulus(t.onset, t.offset, t.image_id)
    expect = again.generate(raw.n_times)
    np.testing.assert_allclose(raw.get_data(), expect, rtol=1e-5, atol=1e-12)


def test_cli_offline_json_and_input_errors(tmp_path, capsys):
    gal = _random_gallery(40)
    Gallery.save(tmp_path / "gal", embeddings=gal.embeddings, ids=gal.ids, space=gal.space)
    out = tmp_path / "sim_raw.fif"
    args = [
        "simulate",
        "--modality",
        "eeg",
        "--subject",
        "2",
        "--n-train-images",
        "6",
        "--n-test-images",
        "2",
        "--test-repeats",
        "2",
        "--gallery",
        str(tmp_path / "gal"),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli_main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_trials"] == 10 and summary["metadata"]["space"] == gal.space and out.exists()
    assert cli_main([*args]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "simulate",
                "--modality",
                "eeg",
                "--n-train-images",
                "100",
                "--gallery",
                str(tmp_path / "gal"),
                "--out",
                str(tmp_path / "x_raw.fif"),
            ]
        )
        == 2
    )
    assert "bigger gallery" in capsys.readouterr().err
    assert cli_main(["simulate", "--modality", "meg", "--profile", EEG, "--out", str(out)]) == 2
    assert "--modality eeg" in capsys.readouterr().err
    assert cli_main(["simulate", "--live", "--out", str(out)]) == 2


# ---------------------------------------------------------------------------------------------- live
def _resolve_one(prop: str, value: str) -> pylsl.StreamInfo:
    found = pylsl.resolve_byprop(prop, value, minimum=1, timeout=10.0)
    assert found, f"stream {value} not found"
    return found[0]


def test_live_subject_reacts_to_an_external_marker_stream(gallery, eeg_forward, unique_name):
    presenter = pylsl.StreamOutlet(
        make_stream_info(f"{unique_name}-presenter", "Markers", ["marker"], 0.0, channel_format="string",
                         source_id=f"{unique_name}-presenter")
    )  # fmt: skip
    subject = VirtualSubject(EEG, gallery, seed=4, snr=6.0, forward=eeg_forward, bad_channel=False)
    live = LiveSubject(
        subject, name=unique_name, react_to=f"{unique_name}-presenter", image_s=0.2, chunk_s=0.02
    )
    live.start()
    inlet = None
    try:
        inlet = pylsl.StreamInlet(_resolve_one("name", unique_name), max_buflen=60, recover=False)
        info = inlet.info(timeout=5.0)
        assert info.channel_count() == 64 and info.nominal_srate() == 1000.0
        assert info.desc().child("channels").child("channel").child_value("label") == "Fp1"
        meta = json.loads(info.desc().child_value("brainstream_simulation"))
        assert meta["seed"] == 4 and meta["space"] == gallery.space
        inlet.open_stream(timeout=5.0)
        time.sleep(0.5)  # let the presenter's marker inlet connect
        onsets = []
        presenter.push_sample(["session_start"])
        for i in range(10):  # 1.1 s apart: onset and offset responses are over before the next baseline
            t = pylsl.local_clock()
            presenter.push_sample([f"test/{gallery.ids[i]}"], t)
            onsets.append(t)
            time.sleep(1.1)
        presenter.push_sample(["test/not-in-gallery"])
        chunks, stamps = [], []
        deadline = time.monotonic() + 10.0
        while not stamps or stamps[-1] < onsets[-1] + 1.0:  # the subject streams on: stop after the last
            assert time.monotonic() < deadline, "the live subject's stream fell behind"
            data, ts = inlet.pull_chunk(timeout=0.2, max_samples=4096)
            if ts:
                chunks.append(np.asarray(data).T)
                stamps.extend(ts)
        x, ts = np.concatenate(chunks, axis=1), np.asarray(stamps)
    finally:
        if inlet is not None:
            inlet.close_stream()
        live.stop()
        del presenter
    assert not live.stats.errors
    assert live.stats.stimuli == 10 and live.stats.unknown_images == 1 and live.stats.ignored_markers == 1
    assert np.allclose(np.diff(ts), 1e-3, atol=2e-4)  # regular 1 kHz time stamps on the LSL clock
    # the response follows each marker: average epochs around the marker times
    sf = 1000.0
    posterior = [i for i, c in enumerate(subject.ch_names) if c.startswith(("O", "PO", "P"))]
    xf = _bandpass(x[posterior], sf)  # visual responses, away from frontal blinks
    rel = [np.searchsorted(ts, t) / sf for t in onsets if ts[0] + 0.3 < t < ts[-1] - 0.7]
    assert len(rel) >= 7
    evoked = _epochs(xf, sf, rel, -0.2, 0.5).mean(0)
    base = np.sqrt(np.mean(evoked[:, :150] ** 2))
    resp = np.sqrt(np.mean(evoked[:, 280:500] ** 2))
    assert resp > 3 * base, (resp, base)


def test_a_marker_delayed_past_its_whole_response_is_counted_and_the_stream_goes_on(gallery, eeg_forward):
    # a loaded machine or an accelerated clock can deliver a marker after everything it would evoke was
    # streamed; the subject must count it and keep streaming, not fail on the stale stimulus
    subject = VirtualSubject(EEG, gallery, seed=4, snr=6.0, forward=eeg_forward, bad_channel=False)
    live = LiveSubject(subject, name="delayed-markers", react_to="nobody", image_s=0.2)
    live.t0 = 100.0  # LSL time of the subject's first sample (the stream is not started here)
    subject.generate(3000)  # 3 s streamed
    assert not live.handle_marker(f"test/{gallery.ids[0]}", 101.65)  # its response ended at 2.95 s
    assert live.stats.late_markers == 1 and live.stats.expired_markers == 1 and live.stats.stimuli == 0
    assert live.handle_marker(f"test/{gallery.ids[1]}", 102.8)  # late, but its response runs on
    assert live.stats.late_markers == 2 and live.stats.expired_markers == 1 and live.stats.stimuli == 1
    quiet = VirtualSubject(EEG, gallery, seed=4, snr=6.0, forward=eeg_forward, bad_channel=False)
    quiet.generate(3000)
    x, baseline = subject.generate(1000), quiet.generate(1000)
    assert np.isfinite(x).all() and x.shape == baseline.shape == (64, 1000)
    assert not np.allclose(x, baseline)  # the late stimulus' remaining response is in the stream


def test_live_self_paced_rsvp_sends_markers_on_time(gallery, eeg_forward, unique_name):
    design = RSVPDesign(n_train_images=6, n_test_images=2, test_repeats=2, image_s=0.2, isi_s=0.2,
                        isi_jitter_s=0.05, lead_in_s=2.0)  # fmt: skip
    subject = VirtualSubject(EEG, gallery, seed=8, forward=eeg_forward)
    live = LiveSubject(subject, name=unique_name, design=design)
    live.start()
    inlet = None
    try:
        inlet = pylsl.StreamInlet(_resolve_one("name", f"{unique_name}-markers"), recover=False)
        inlet.open_stream(timeout=5.0)
        live.wait(10.0)
        time.sleep(0.2)
        got = []
        while True:
            sample, t = inlet.pull_sample(timeout=0.2)
            if sample is None:
                break
            got.append((sample[0], t))
    finally:
        if inlet is not None:
            inlet.close_stream()
        live.stop()
    assert live.finished and not live.stats.errors
    trials = make_rsvp_schedule(gallery.ids, design)
    assert [v for v, _ in got] == [t.marker for t in trials]
    np.testing.assert_allclose([t - live.t0 for _, t in got], [t.onset for t in trials], atol=1e-6)
