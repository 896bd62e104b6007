"""Evaluation: N-way/whole-set/averaged metrics with ridge, LOSO, time-resolved windows and plot, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainstream.models.channels import ChannelMismatchError
from brainstream.models.checkpoint import CheckpointError
from brainstream.models.evaluation import (
    evaluate_checkpoint,
    evaluate_split,
    leave_one_subject_out,
    only_subjects,
    plot_time_resolved,
    time_resolved,
    time_windows,
)
from brainstream.models.training.data import DataError, average_repetitions, save_encoding_data
from brainstream.models.training.trainer import fit_ridge_encoder, train
from tests.models.encoding_fixtures import synthetic, tiny_config


@pytest.fixture(scope="module")
def noisy():
    return synthetic(n_train_images=200, n_test_images=30, test_reps=4, snr=0.7)


@pytest.fixture(scope="module")
def ridge(noisy):
    return fit_ridge_encoder(noisy.split("train"))[0]


def test_evaluate_split_structure_and_averaging(noisy, ridge):
    report = evaluate_split(ridge, noisy.split("test"), ridge, n_way=10, seed=0)
    m = report["metrics"]
    assert m["n_way"] == 10 and m["chance_top5"] == pytest.approx(0.5)
    assert m["ridge"]["top5"] == pytest.approx(m["top5"])  # the model IS the ridge here
    # averaging 4 noisy repetitions must help a linear decoder (noise variance / 4)
    assert report["whole_set"]["averaged"]["top1"] > report["whole_set"]["top1"]
    assert report["whole_set"]["n_way"] == 30 and report["whole_set"]["chance_top1"] == pytest.approx(1 / 30)
    avg = average_repetitions(noisy.split("test"))
    assert len(avg.X) == 30
    first = noisy.split("test").subset(noisy.split("test").image_ids == avg.image_ids[0])
    np.testing.assert_allclose(avg.X[0], first.X.mean(axis=0), atol=1e-5)


def test_evaluate_split_bad_input(noisy, ridge):
    with pytest.raises(DataError, match="empty"):
        evaluate_split(ridge, noisy.split("test").subset(np.zeros(len(noisy.split("test").X), bool)))


def test_time_windows_cover_sliding_and_growing():
    wins = time_windows(tmin=-0.1, n_times=50, sfreq=50.0)
    sliding = [w for w in wins if w[0] == "sliding"]
    growing = [w for w in wins if w[0] == "growing"]
    assert all(round(w[2] - w[1], 6) == 0.24 or round(w[2] - w[1], 6) == 0.26 for w in sliding)
    assert sliding[0][3] == slice(0, 12) and sliding[-1][3].stop <= 50
    assert all(w[1] == -0.1 for w in growing) and growing[-1][3] == slice(0, 50)


def test_time_resolved_finds_the_response(noisy, ridge, tmp_path):
    rows = time_resolved(ridge, noisy.split("train"), noisy.split("test"), n_way=10, progress=False, step=0.1)
    sliding = [r for r in rows if r["kind"] == "sliding"]
    # the synthetic response sits 0.3–0.45 of the way into the epoch: a window holding it must decode
    # clearly better than one that misses it
    best = max(sliding, key=lambda r: r["ridge"]["top5"])
    worst = min(sliding, key=lambda r: r["ridge"]["top5"])
    assert best["ridge"]["top5"] > worst["ridge"]["top5"] + 0.1
    assert best["tmin"] <= 0.08 and best["tmax"] >= 0.12  # it holds the response (about 0.08-0.14 s)
    path = plot_time_resolved(rows, tmp_path / "tr.png", title="test")
    assert path.stat().st_size > 5000


def test_leave_one_subject_out():
    three = synthetic(n_train_images=80, n_test_images=15, n_subjects=3, n_ch=8, n_times=20)
    out = leave_one_subject_out(tiny_config(optim={"max_epochs": 2}), three, progress=False)
    assert set(out["subjects"]) == {"sub-01", "sub-02", "sub-03"}
    for m in out["subjects"].values():
        assert m["n_way"] == 15 and m["ridge"] is not None
    assert out["mean"]["top5"] == pytest.approx(np.mean([m["top5"] for m in out["subjects"].values()]))
    sub = only_subjects(three, ["sub-03"])
    assert sub.subject_names == ["sub-03"] and set(sub.subjects.tolist()) == {0}
    with pytest.raises(DataError, match="at least 2 subjects"):
        leave_one_subject_out(tiny_config(), sub, progress=False)


def test_evaluate_checkpoint_refusals(tmp_path, caplog):
    data = synthetic(n_train_images=80, n_test_images=15, n_ch=8, n_times=20)
    result = train(tiny_config(optim={"max_epochs": 1}), tmp_path / "ck", data=data, progress=False)
    save_encoding_data(tmp_path / "ok.npz", data)
    report = evaluate_checkpoint(tmp_path / "ck", [str(tmp_path / "ok.npz")], progress=False)
    assert report["per_subject"]["sub-01"]["mode"] == "within"
    assert report["top5"] == pytest.approx(result.metrics["top5"])
    # a new subject's recording: evaluated as an unseen subject (mean subject layer)
    other = synthetic(n_train_images=80, n_test_images=15, n_ch=8, n_times=20)
    other.subject_names = ["sub-09"]
    save_encoding_data(tmp_path / "other.npz", other)
    rep = evaluate_checkpoint(tmp_path / "ck", [str(tmp_path / "other.npz")], progress=False)
    assert rep["per_subject"]["sub-09"]["mode"] == "unseen"
    # a recording without one of the 8 sensors: refused beyond the allowed fraction, naming it; within it,
    # evaluated with the sensor masked (the same plan as the live decoder's)
    fewer = synthetic(n_train_images=80, n_test_images=15, n_ch=7, n_times=20)
    save_encoding_data(tmp_path / "fewer.npz", fewer)
    with pytest.raises(ChannelMismatchError, match="lacks 1 of them: EEG007"):
        evaluate_checkpoint(tmp_path / "ck", [str(tmp_path / "fewer.npz")], progress=False)
    masked = evaluate_checkpoint(
        tmp_path / "ck", [str(tmp_path / "fewer.npz")], progress=False, max_missing=0.2
    )
    assert 0.0 <= masked["top5"] <= 1.0
    assert (
        "missing from the recordings: 1 of the encoder's sensors" in caplog.text and "EEG007" in caplog.text
    )
    evaluate_checkpoint(
        tmp_path / "ck", [str(tmp_path / "ok.npz")], progress=False, bad_channels=["EEG003"], max_missing=0.2
    )
    assert "marked bad: 1 of the encoder's sensors (masked in the spatial attention): EEG003" in caplog.text
    # another embedding space
    alien = synthetic(n_train_images=80, n_test_images=15, n_ch=8, n_times=20)
    alien.space = "openclip:other"
    save_encoding_data(tmp_path / "alien.npz", alien)
    with pytest.raises(CheckpointError, match="space mismatch.*test:synthetic"):
        evaluate_checkpoint(tmp_path / "ck", [str(tmp_path / "alien.npz")], progress=False)
    # test images the checkpoint was trained on
    flipped = synthetic(n_train_images=80, n_test_images=15, n_ch=8, n_times=20)
    flipped.splits = np.where(flipped.splits == "train", "test", "train")
    save_encoding_data(tmp_path / "flipped.npz", flipped)
    with pytest.raises(DataError, match="used to train this checkpoint"):
        evaluate_checkpoint(tmp_path / "ck", [str(tmp_path / "flipped.npz")], progress=False)
    assert json.loads((tmp_path / "ck" / "metrics.json").read_text())["n_way"] == 15
