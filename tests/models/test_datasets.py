"""Dataset loaders on small files written here in the real layouts, and the honest-splitting rules."""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pytest

from brainstream.models.datasets import (
    DataLeakError,
    DatasetError,
    EpochsDataset,
    load_dataset,
    load_simulated,
)
from brainstream.models.embedders import l2_normalise
from brainstream.models.gallery import Gallery, SpaceMismatchError
from brainstream.models.preprocessing import PreprocessingConfig, Preprocessor
from brainstream.models.windowing import WindowSpec, cut_window

SPACE = "test:datasets:8"
PRE = {"l_freq": 0.5, "h_freq": 30.0, "sfreq_out": 100.0}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Gallery:
    rng = np.random.default_rng(1)
    ids = [f"img{i:02d}" for i in range(30)]
    root = tmp_path_factory.mktemp("gal") / "g"
    return Gallery.save(
        root, embeddings=l2_normalise(rng.normal(size=(30, 8))), ids=ids, space=SPACE, embedder="t"
    )


def _events(n_train: int = 24, n_test: int = 6, reps: int = 3, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    events = [("train", f"img{i:02d}") for i in range(n_train)]
    events += [("test", f"img{n_train + i:02d}") for i in range(n_test) for _ in range(reps)]
    return [events[i] for i in rng.permutation(len(events))]


def write_sim_fif(path, gallery: Gallery, events, sfreq=500.0, meta=None, crop=0.0, amp=2e-6) -> dict:
    """A small EEG recording in the simulator's FIF layout: evoked amplitude = embedding dim 0."""
    rng = np.random.default_rng(0)
    ch_names = ["O1", "Oz", "O2", "Pz", "Cz", "Fz"]
    soa = 0.9
    n = int(sfreq * (2.0 + soa * len(events) + 2.0))
    data = rng.normal(size=(len(ch_names), n)) * 0.5e-6
    onsets = 2.0 + soa * np.arange(len(events))
    for onset, (_, image_id) in zip(onsets, events, strict=True):
        s = int(round(onset * sfreq))
        bump = np.hanning(int(0.2 * sfreq))
        gain = gallery.embeddings_for([image_id])[0, 0] if image_id in gallery else 0.0
        data[:3, s + int(0.1 * sfreq) : s + int(0.3 * sfreq)] += amp * gain * bump
    info = mne.create_info(ch_names, sfreq, "eeg")
    meta = {"gallery": str(gallery.root), "space": gallery.space, "seed": 7} if meta is None else meta
    info["description"] = json.dumps(meta)
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_meas_date(1_700_000_000.0)
    raw.set_annotations(mne.Annotations(onsets, 0.5, [f"{s}/{i}" for s, i in events]))
    if crop:  # first_samp > 0: annotation times must still line up with the data
        raw.crop(tmin=crop)
    raw.save(path, overwrite=True, verbose=False)
    return {"data": data, "onsets": onsets, "sfreq": sfreq, "ch_names": ch_names}


# ----------------------------------------------------------------------------------------- EpochsDataset
def _toy(n_train=20, n_test=4, reps=3) -> EpochsDataset:
    ids = [f"a{i}" for i in range(n_train)] + [f"t{i}" for i in range(n_test) for _ in range(reps)]
    splits = ["train"] * n_train + ["test"] * (n_test * reps)
    X = np.random.default_rng(0).normal(size=(len(ids), 3, 5)).astype(np.float32)
    return EpochsDataset(X, ids, np.array(splits), np.zeros(len(ids), int), ["a", "b", "c"], 100.0, -0.1)


def test_train_val_split_is_by_image_seeded_and_excludes_test() -> None:
    ds = _toy()
    ds.image_ids[1] = "a0"  # image a0 shown twice in training
    ds = EpochsDataset(ds.X, ds.image_ids, ds.splits, ds.subject_ids, ds.ch_names, ds.sfreq, ds.tmin)
    train, val = ds.train_val_split(val_fraction=0.25, seed=3)
    assert not set(train.image_ids) & set(val.image_ids)
    assert len(set(val.image_ids)) == round(0.25 * 19)
    assert set(train.splits) == {"train"} == set(val.splits)
    assert len(train) + len(val) == 20
    again = ds.train_val_split(val_fraction=0.25, seed=3)[1]
    other = ds.train_val_split(val_fraction=0.25, seed=4)[1]
    assert again.image_ids == val.image_ids and set(other.image_ids) != set(val.image_ids)


def test_test_split_averages_repetitions() -> None:
    ds = _toy(reps=3)
    test = ds.test()
    assert len(test) == 4 and list(test.n_repetitions) == [3, 3, 3, 3]
    rows = [i for i, x in enumerate(ds.image_ids) if x == "t2"]
    np.testing.assert_allclose(test.X[test.image_ids.index("t2")], ds.X[rows].mean(0), rtol=1e-6)
    assert len(ds.test(average=False)) == 12


def test_leaks_and_empty_splits_are_refused() -> None:
    ds = _toy()
    with pytest.raises(DataLeakError, match=r"test image\(s\) also appear in training.*'t0'"):
        EpochsDataset(ds.X, ["t0", *ds.image_ids[1:]], ds.splits, ds.subject_ids, ds.ch_names, 100.0, 0.0)
    only_train = ds.subset(ds.splits == "train")
    with pytest.raises(DatasetError, match=r"'test' split is empty.*'train': 20"):
        only_train.test()
    with pytest.raises(DatasetError, match="at least 2 distinct training images"):
        ds.subset(np.arange(len(ds)) >= 19).train_val_split()
    with pytest.raises(DatasetError, match="no gallery"):
        ds.embeddings_for()
    with pytest.raises(DatasetError, match="NaN"):
        EpochsDataset(ds.X * np.nan, ds.image_ids, ds.splits, ds.subject_ids, ds.ch_names, 100.0, 0.0)


def test_concatenate_checks_compatibility() -> None:
    a, b = _toy(), _toy()
    b.subject_ids[:] = 1
    both = EpochsDataset.concatenate([a, b])
    assert len(both) == 2 * len(a) and set(both.subject_ids.tolist()) == {0, 1}
    assert len(both.test()) == 8  # averaged per subject and image
    c = _toy()
    c.ch_names = ["x", "y", "z"]
    with pytest.raises(DatasetError, match="different channels"):
        EpochsDataset.concatenate([a, c])


# ---------------------------------------------------------------------------------------- simulated FIF
@pytest.mark.parametrize("crop", [0.0, 1.0])
def test_load_simulated_runs_the_online_chain(tmp_path, gallery, crop) -> None:
    events = _events()
    rec = write_sim_fif(tmp_path / "sim_raw.fif", gallery, events, crop=crop)
    ds = load_simulated(tmp_path / "sim_raw.fif", preprocessing=PRE, tmin=-0.2, tmax=0.6)
    assert len(ds) == len(events) and ds.subject_ids[0] == 7 and ds.space == SPACE
    assert ds.X.shape == (len(events), 6, 80) and ds.sfreq == 100.0 and ds.modality == "eeg"
    assert [f"{s}/{i}" for s, i in zip(ds.splits, ds.image_ids, strict=True)] == [
        f"{s}/{i}" for s, i in events
    ]
    assert ds.positions is not None and ds.positions.shape == (6, 2)
    # the evoked bump follows embedding dim 0: the events were aligned with the data
    evoked = ds.X[:, :3, 30:50].mean(axis=(1, 2))
    assert np.corrcoef(evoked, ds.embeddings_for()[:, 0])[0, 1] > 0.9
    # parity: the window equals what the online Preprocessor + cut_window produce for the same samples
    config = PreprocessingConfig(**PRE)
    pre = Preprocessor(config, rec["ch_names"], rec["sfreq"], ds.scaler)
    start = int(round(crop * rec["sfreq"]))
    raw = rec["data"][:, start:]
    ts = np.arange(raw.shape[1]) / rec["sfreq"]
    outs = [pre.process(raw[:, i : i + 37], ts[i : i + 37]) for i in range(0, raw.shape[1], 37)]
    out, out_ts = np.concatenate([o for o, _ in outs], 1), np.concatenate([t for _, t in outs])
    k = len(events) // 2
    online = cut_window(out, out_ts, rec["onsets"][k] - crop, WindowSpec(-0.2, 0.6, 100.0), config.baseline)
    np.testing.assert_allclose(ds.X[k], online.data, atol=1e-5)


def test_scaler_is_fitted_on_training_windows_only(tmp_path, gallery) -> None:
    events = _events()
    write_sim_fif(tmp_path / "a_raw.fif", gallery, events)
    ds = load_simulated(tmp_path / "a_raw.fif", preprocessing=PRE, tmin=-0.2, tmax=0.6)
    # the same recording with the test trials' labels dropped gives the same scaler; with test turned
    # into train (and no test left), a different one
    assert ds.scaler.is_fitted and ds.scaler.ch_names == ds.ch_names
    relabelled = [("train", i) if s == "test" else ("catch", i) for s, i in events]
    write_sim_fif(tmp_path / "b_raw.fif", gallery, relabelled)
    other = load_simulated(tmp_path / "b_raw.fif", preprocessing=PRE, tmin=-0.2, tmax=0.6)
    assert not np.allclose(other.scaler.center, ds.scaler.center)
    assert set(other.splits) == {"train"}  # catch trials are not loaded


def test_load_simulated_errors(tmp_path, gallery) -> None:
    with pytest.raises(DatasetError, match="brainstream simulate"):
        load_simulated(tmp_path / "missing_raw.fif")
    events = _events()
    write_sim_fif(
        tmp_path / "s_raw.fif", gallery, events, meta={"gallery": str(gallery.root), "space": "demo:x:8"}
    )
    with pytest.raises(SpaceMismatchError, match=r"demo:x:8.*test:datasets:8"):
        load_simulated(tmp_path / "s_raw.fif", preprocessing=PRE)
    write_sim_fif(tmp_path / "u_raw.fif", gallery, [*events, ("train", "stranger")], meta={})
    with pytest.raises(KeyError, match="stranger"):
        load_simulated(tmp_path / "u_raw.fif", gallery=gallery.root, preprocessing=PRE)
    write_sim_fif(tmp_path / "g_raw.fif", gallery, events, meta={"gallery": str(tmp_path / "elsewhere")})
    with pytest.raises(DatasetError, match="does not exist here; pass gallery=DIR"):
        load_simulated(tmp_path / "g_raw.fif", preprocessing=PRE)
    ds = load_dataset("simulated", tmp_path / "g_raw.fif", subject=3, gallery=gallery, preprocessing=PRE)
    assert set(ds.subject_ids.tolist()) == {3}
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset("things_fmri", tmp_path)


# ------------------------------------------------------------------------------------------- THINGS-EEG2
def _write_eeg2_release(
    root, gallery: Gallery, n_train=12, n_test=4, n_rep_train=4, n_rep_test=5, bare_pickle=False
):
    """A mini THINGS-EEG2 preprocessed release: pickled dicts exactly as the real one stores them."""
    import pickle

    rng = np.random.default_rng(3)
    ch_names = ["Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8"]
    times = np.round(np.arange(-0.2, 0.8, 0.01), 2)  # 100 Hz, 100 samples
    concepts = [f"{i:05d}_thing{i}" for i in range(n_train + n_test)]
    files = gallery.ids[: n_train + n_test]
    (root / "sub-02").mkdir(parents=True)
    for stem, sl, n_rep in (
        ("preprocessed_eeg_training", slice(0, n_train), n_rep_train),
        ("preprocessed_eeg_test", slice(n_train, n_train + n_test), n_rep_test),
    ):
        n = sl.stop - sl.start
        data = rng.normal(size=(n, n_rep, len(ch_names), times.size))
        data[..., 30:50] += 3 * gallery.embeddings_for(files[sl])[:, 0][:, None, None, None]
        content = {"preprocessed_eeg_data": data, "ch_names": ch_names, "times": times}
        path = root / "sub-02" / f"{stem}.npy"
        if bare_pickle:
            path.write_bytes(pickle.dumps(content, protocol=4))
        else:
            np.save(path, content, allow_pickle=True)
    meta = {
        "train_img_concepts": concepts[:n_train],
        "train_img_files": [f"{f}.jpg" for f in files[:n_train]],
        "test_img_concepts": concepts[n_train:],
        "test_img_files": [f"{f}.jpg" for f in files[n_train:]],
    }
    np.save(root / "image_metadata.npy", meta, allow_pickle=True)


@pytest.mark.parametrize("bare_pickle", [False, True])
def test_things_eeg2_release_is_converted_safely_then_loaded(tmp_path, gallery, bare_pickle) -> None:
    from brainstream.models.datasets import things_eeg2

    _write_eeg2_release(tmp_path, gallery, bare_pickle=bare_pickle)
    match = "pickled file.*python -m brainstream.models.datasets.things_eeg2 convert"
    with pytest.raises(DatasetError, match=match):
        load_dataset("things_eeg2", tmp_path, subject=2, gallery=gallery)
    assert things_eeg2.main(["convert", str(tmp_path)]) == 0
    assert np.load(tmp_path / "sub-02" / "preprocessed_eeg_training_data.npy", allow_pickle=False).shape == (
        12, 4, 8, 100,
    )  # fmt: skip
    ds = load_dataset("things_eeg2", tmp_path, subject="sub-02", gallery=gallery)
    assert ds.X.shape == (12 * 4 + 4 * 5, 8, 100) and ds.sfreq == 100.0 and ds.tmin == pytest.approx(-0.2)
    assert ds.image_ids[:5] == [gallery.ids[0]] * 4 + [gallery.ids[1]]
    assert set(ds.subject_ids.tolist()) == {2} and ds.info["train_serve_parity"] is False
    assert len(ds.test()) == 4 and set(ds.test().n_repetitions.tolist()) == {5}
    # image i's rows carry image i's response: the id ↔ data alignment survived the conversion
    evoked = ds.X[:, :, 30:50].mean(axis=(1, 2))
    assert np.corrcoef(evoked, ds.embeddings_for()[:, 0])[0, 1] > 0.8
    avg = load_dataset(
        "things_eeg2", tmp_path, subject=2, gallery=gallery, average_train=True, tmin=0.0, tmax=0.5
    )
    assert avg.X.shape == (12 + 20, 8, 50) and avg.tmin == 0.0 and avg.n_repetitions[0] == 4


def test_things_eeg2_converter_refuses_code_in_pickles(tmp_path) -> None:
    import pickle

    from brainstream.models.datasets import things_eeg2

    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / "preprocessed_eeg_training.npy").write_bytes(pickle.dumps({"x": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle builtins.print"):
        things_eeg2.convert_release(tmp_path)
    assert things_eeg2.main(["convert", str(tmp_path)]) == 2
    with pytest.raises(DatasetError, match=r"subjects found under .*\['sub-01'\]"):
        load_dataset("things_eeg2", tmp_path, subject=3)


# -------------------------------------------------------------------------------------------------- XDF
def _write_xdf(path, gallery: Gallery, events, sfreq=250.0, extra_signal=False, t0=5000.0) -> None:
    """A calibration-like recording written by our real XDF writer: EEG stream + marker stream."""
    from brainstream.realtime.recording.xdf_writer import StreamHeader, XdfWriter

    rng = np.random.default_rng(5)
    ch_names = ["O1", "Oz", "O2", "Pz", "Cz", "Fz", "Counter"]
    soa = 0.9
    n = int(sfreq * (2.0 + soa * len(events) + 2.0))
    data = rng.normal(size=(len(ch_names), n)).astype(np.float32)
    data[-1] = np.arange(n)  # a sample counter channel, not brain signal
    ts = t0 + np.arange(n) / sfreq + rng.normal(0, 2e-4, n)  # LSL timestamps jitter
    onsets = t0 + 2.0 + soa * np.arange(len(events))
    for onset, (_, image_id) in zip(onsets, events, strict=True):
        s = int(round((onset - t0) * sfreq))
        gain = gallery.embeddings_for([image_id])[0, 0] if image_id in gallery else 0.0
        data[:3, s + 25 : s + 75] += 10 * gain * np.hanning(50)
    types = ["EEG"] * 6 + ["counter"]
    with XdfWriter(path, autoflush=False, fsync=False) as writer:
        sig = writer.add_stream(StreamHeader.local("dev", "EEG", ch_names, sfreq, ch_types=types))
        mk = writer.add_stream(
            StreamHeader.local("presenter", "Markers", ["marker"], 0.0, channel_format="string")
        )
        if extra_signal:
            writer.add_stream(StreamHeader.local("dev2", "EEG", ["a"], sfreq))
        marks = np.array([t0 + 1.0, *onsets])
        values = np.array(["run_start", *[f"{s}/{i}" for s, i in events]])
        for start in range(0, n, 125):  # interleaved chunks, as a recorder writes them
            writer.write_samples(sig, data[:, start : start + 125], ts[start : start + 125])
            writer.write_clock_offset(sig, ts[start], 0.0)
            due = (marks >= ts[start]) & (marks < ts[min(start + 125, n - 1)])
            writer.write_samples(mk, list(values[due]), marks[due])
            writer.write_clock_offset(mk, ts[start], 0.0)
        if extra_signal:
            writer.write_samples(3, data[:1], ts)


def test_load_xdf_recording(tmp_path, gallery) -> None:
    from brainstream.models.datasets import load_xdf_recording

    events = _events(seed=2)
    _write_xdf(tmp_path / "calib.xdf", gallery, events)
    ds = load_xdf_recording(
        tmp_path / "calib.xdf", gallery=gallery, preprocessing=PRE, tmin=-0.2, tmax=0.6, subject=4
    )
    assert ds.ch_names == ["O1", "Oz", "O2", "Pz", "Cz", "Fz"]  # the counter channel is not brain signal
    assert len(ds) == len(events) and set(ds.subject_ids.tolist()) == {4}
    assert [f"{s}/{i}" for s, i in zip(ds.splits, ds.image_ids, strict=True)] == [
        f"{s}/{i}" for s, i in events
    ]
    evoked = ds.X[:, :3, 30:50].mean(axis=(1, 2))
    assert np.corrcoef(evoked, ds.embeddings_for()[:, 0])[0, 1] > 0.9
    assert ds.info["signal_stream"] == "dev" and ds.info["marker_stream"] == "presenter"


def test_load_xdf_recording_survives_a_crash_and_names_ambiguous_streams(tmp_path, gallery) -> None:
    from brainstream.models.datasets import load_xdf_recording

    events = _events(seed=2)
    _write_xdf(tmp_path / "full.xdf", gallery, events)
    raw = (tmp_path / "full.xdf").read_bytes()
    # the recorder died: the markers are in, the end of the signal is cut mid-chunk
    (tmp_path / "cut.xdf").write_bytes(raw[: int(len(raw) * 0.6)])
    cut = load_xdf_recording(tmp_path / "cut.xdf", gallery=gallery, preprocessing=PRE, tmin=-0.2, tmax=0.6)
    assert 0 < len(cut) < len(events)  # the trials whose signal was saved, no more
    assert [f"{s}/{i}" for s, i in zip(cut.splits, cut.image_ids, strict=True)] == [
        f"{s}/{i}" for s, i in events[: len(cut)]
    ]
    # the tolerant reader (used when pyxdf gives up) sees the same streams and markers
    from brainstream.models.datasets.xdf_recording import _read_pyxdf, _read_tolerant

    a, b = _read_pyxdf(tmp_path / "cut.xdf"), _read_tolerant(tmp_path / "cut.xdf")
    assert [s.name for s in a] == [s.name for s in b] and a[1].data == b[1].data
    np.testing.assert_allclose(a[0].timestamps[:100], b[0].timestamps[:100], atol=2e-3)
    _write_xdf(tmp_path / "two.xdf", gallery, events, extra_signal=True)
    with pytest.raises(DatasetError, match=r"several signal streams.*'dev', 'dev2'.*signal_stream=NAME"):
        load_xdf_recording(tmp_path / "two.xdf", gallery=gallery, preprocessing=PRE)
    ds2 = load_xdf_recording(
        tmp_path / "two.xdf", gallery=gallery, preprocessing=PRE, signal_stream="dev", tmax=0.6
    )
    assert len(ds2) == len(events)
    with pytest.raises(DatasetError, match=r"stream .dev. lacks 1 of them: T7"):
        load_xdf_recording(tmp_path / "full.xdf", gallery=gallery, ch_names=["O1", "T7"])


# -------------------------------------------------------------------------------------------- THINGS-MEG
MEG_LAG = 0.05  # photodiode flash after the trigger (s)
ROWS_PER_RUN = [  # (trial_type, image_path) in presentation order; {r} = run counter
    ("exp", "images_meg/con{r}a/con{r}a_01b.jpg"),
    ("test", "images_test_meg/tcon1/tcon1_01b.jpg"),
    ("exp", "images_meg/con{r}b/con{r}b_02s.jpg"),
    ("catch", "images_catch_meg/catch_{r}.jpg"),
    ("exp", "images_meg/tcon1/tcon1_0{r}s.jpg"),  # a TRAINING image of a TEST concept: must be removed
    ("test", "images_test_meg/tcon2/tcon2_01b.jpg"),
    ("exp", "images_meg/con{r}c/con{r}c_03n.jpg"),
]


def _write_things_meg(root, runs=((1, 1), (1, 2), (2, 1)), extra_row=False) -> Gallery:
    """A mini ds004212: BIDS MEG runs (FIF instead of CTF .ds: mne cannot write CTF), the sourcedata
    sample attributes, UPPT001 triggers (64 per image, 32 at the end), a UADC016 photodiode lagging the
    triggers, and an events.tsv whose onsets are 150 ms late like the real image_on."""
    from mne_bids import BIDSPath, write_raw_bids

    from brainstream.models.device_profile import load_device_profile

    rng = np.random.default_rng(11)
    occipital = [
        c for c in load_device_profile("ctf275_things_meg").channels if c[:3] in ("MLO", "MRO", "MZO")
    ]
    meg = ["MRO11-1609", *[c for c in occipital if c != "MRO11-1609"][:10]]
    names = [*meg, "BG1-1609", "UPPT001", "UADC016-2104"]
    types = ["mag"] * len(meg) + ["ref_meg", "stim", "misc"]
    ids = sorted(
        {Path(p.format(r=k)).stem for k in range(len(runs)) for t, p in ROWS_PER_RUN if t != "catch"}
    )
    emb = l2_normalise(rng.normal(size=(len(ids), 8)))
    gal = Gallery.save(root / "gallery", embeddings=emb, ids=ids, space=SPACE, embedder="t")
    sfreq, soa = 1200.0, 1.0
    attributes = []
    for k, (ses, run) in enumerate(runs):
        rows = [(t, p.format(r=k)) for t, p in ROWS_PER_RUN]
        n = int(sfreq * (1.5 + soa * len(rows) + 1.5))
        data = np.zeros((len(names), n))
        data[: len(meg) + 1] = rng.normal(size=(len(meg) + 1, n)) * 1e-13
        triggers = (sfreq * (1.5 + soa * np.arange(len(rows)))).astype(int)
        for (kind, path), t in zip(rows, triggers, strict=True):
            data[-2, t : t + 12] = 64
            flash = t + int(MEG_LAG * sfreq)
            data[-1, flash : flash + int(0.5 * sfreq)] = 5.0
            stem = Path(path).stem
            gain = gal.embeddings_for([stem])[0, 0] if stem in gal else 0.0
            start = flash + int(0.1 * sfreq)
            data[1 : len(meg), start : start + 120] += 4e-13 * gain * np.hanning(120)
            attributes.append({"trial_type": kind, "session_nr": ses, "run_nr": run, "image_path": path,
                               "image_on": (t + 0.15 * sfreq) / sfreq})  # fmt: skip
        data[-2, n - 200 : n - 188] = 32
        if extra_row and k == 0:
            attributes.append({"trial_type": "exp", "session_nr": ses, "run_nr": run,
                               "image_path": "images_meg/conx/conx_01b.jpg", "image_on": 0})  # fmt: skip
        info = mne.create_info(names, sfreq, types)
        info["line_freq"] = 60.0
        raw = mne.io.RawArray(data, info, verbose=False)
        raw.set_meas_date(1_600_000_000.0)
        events = np.column_stack(
            [triggers + int(0.15 * sfreq), np.zeros_like(triggers), np.ones_like(triggers)]
        )
        bp = BIDSPath(
            subject="BIGMEG1", session=f"{ses:02d}", task="main", run=f"{run:02d}", datatype="meg", root=root
        )
        write_raw_bids(raw, bp, events=events, event_id={"image_on": 1}, format="FIF", allow_preload=True,
                       overwrite=True, verbose=False)  # fmt: skip
    (root / "sourcedata").mkdir(exist_ok=True)
    with (root / "sourcedata" / "sample_attributes_P1.csv").open("w", newline="") as handle:
        import csv

        writer = csv.DictWriter(handle, fieldnames=list(attributes[0]))
        writer.writeheader()
        writer.writerows(attributes)
    return gal


@pytest.fixture(scope="module")
def things_meg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds004212")
    return root, _write_things_meg(root)


def _peak_time(ds: EpochsDataset) -> float:
    gain = ds.embeddings_for()[:, 0]
    X = ds.X[:, 1:].mean(axis=1)
    corr = [abs(np.corrcoef(X[:, t], gain)[0, 1]) for t in range(ds.n_times)]
    return float(ds.times[int(np.argmax(corr))])


def test_things_meg_loader(things_meg_root) -> None:
    root, gal = things_meg_root
    kw = {"gallery": gal, "preprocessing": {"l_freq": 0.5, "h_freq": 30.0}, "tmin": -0.2, "tmax": 0.6}
    ds = load_dataset("things_meg", root, subject=1, onsets="photodiode", progress=False, **kw)
    assert "MRO11-1609" not in ds.ch_names and "BG1-1609" not in ds.ch_names and len(ds.ch_names) == 10
    assert ds.sfreq == 120.0 and ds.n_times == 96 and set(ds.subject_ids.tolist()) == {1}
    assert ds.positions.shape == (10, 2) and ds.modality == "meg"
    # catch trials and training images of test concepts are gone; test images repeat across runs
    assert not any(
        i.startswith("tcon1_0") and s == "train" for i, s in zip(ds.image_ids, ds.splits, strict=True)
    )
    assert not any(i.startswith("catch") for i in ds.image_ids)
    assert int((ds.splits == "train").sum()) == 3 * 3 and int((ds.splits == "test").sum()) == 3 * 2
    assert ds.info["removed_train_trials_of_test_concepts"] == 3 and ds.info["test_concepts"] == 2
    assert len(ds.test()) == 2 and list(ds.test().n_repetitions) == [3, 3]
    # onsets: the photodiode puts the response at +100..200 ms; the trigger is 50 ms earlier, so the same
    # response appears 50 ms later in trigger-locked epochs (the 150 ms late events.tsv is never used)
    by_trigger = load_dataset(
        "things_meg", root, subject="sub-BIGMEG1", onsets="trigger", progress=False, **kw
    )
    peak_pd, peak_trig = _peak_time(ds), _peak_time(by_trigger)
    assert 0.1 <= peak_pd <= 0.2
    assert peak_trig - peak_pd == pytest.approx(MEG_LAG, abs=1.5 / 120)
    one = load_dataset("things_meg", root, subject=1, sessions=[2], progress=False, **kw)
    assert one.info["runs"] == [[2, 1]] and len(one) == 5


def test_things_meg_errors(tmp_path, things_meg_root) -> None:
    root, gal = things_meg_root
    with pytest.raises(DatasetError, match=r"subjects there: \['sub-BIGMEG1'\]"):
        load_dataset("things_meg", root, subject=3, gallery=gal)
    with pytest.raises(DatasetError, match="never the late image_on"):
        load_dataset("things_meg", root, subject=1, onsets="image_on")
    with pytest.raises(DatasetError, match=r"\(session, run\) found: \[\(1, 1\), \(1, 2\), \(2, 1\)\]"):
        load_dataset("things_meg", root, subject=1, sessions=[7])
    bad = tmp_path / "bad"
    _write_things_meg(bad, runs=((1, 1),), extra_row=True)
    with pytest.raises(DatasetError, match="7 image triggers .* but 8 presentations"):
        load_dataset("things_meg", bad, subject=1, progress=False)
    (bad / "sourcedata" / "sample_attributes_P1.csv").unlink()
    with pytest.raises(DatasetError, match="sample_attributes_P1.csv"):
        load_dataset("things_meg", bad, subject=1)
