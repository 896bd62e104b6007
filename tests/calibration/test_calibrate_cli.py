"""``brainstream calibrate`` closed loop: presenter (offscreen Qt) → LSL markers → live virtual subject (its
own process, reacting on the shared accelerated clock) → recorder (XDF) → adaptation → report → profile.

The run is interrupted after 40 trials and resumed by the same command, as a person taking a break would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainstream.calibration.profile import load_subject_profile
from brainstream.calibration.protocol import build_schedule, load_protocol
from brainstream.cli import main

SEED = 7  # not among rsvp_fast's pretraining seeds (201, 202)


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_closed_loop_calibration_resumes_and_writes_a_profile(tmp_path, capsys):
    args = ["calibrate", "--subject", "V7", "--protocol", "rsvp_fast", "--out", str(tmp_path),
            "--virtual-subject", str(SEED), "--speed", "20", "--json", "--no-progress"]  # fmt: skip
    assert main([*args, "--max-trials", "40"]) == 3
    first = _json(capsys)
    assert first == {**first, "complete": False, "trials_done": 40}
    with pytest.raises(Exception, match="did not finish"):
        load_subject_profile(tmp_path, "V7")

    assert main(args) == 0
    summary = _json(capsys)
    assert set(summary) == {"trials", "chance_top5", "zero_shot", "ridge", "adapted", "reference", "report"}
    assert set(summary["zero_shot"]) == {"top5"} and set(summary["ridge"]) == {"top5"}
    assert set(summary["adapted"]) == {"top1", "top5"} and set(summary["reference"]) == {"top5"}
    cfg = load_protocol("rsvp_fast")
    assert summary["trials"] == cfg.n_trials  # both runs together: nothing lost, nothing twice
    assert summary["chance_top5"] == pytest.approx(5 / cfg.n_test_images)
    for key in ("zero_shot", "ridge", "adapted", "reference"):
        assert 0.0 <= summary[key]["top5"] <= 1.0

    root = tmp_path / "V7"
    runs = sorted((root / "runs").glob("run-*.xdf"))
    assert len(runs) == 2
    # the recordings hold the presenter's onsets in schedule order and signal around each of them
    from brainstream.calibration.data import read_run
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery

    schedule = build_schedule(cfg, list(Gallery.load(default_gallery_dir()).ids))
    shown = []
    for path in runs:
        run = read_run(path)
        stim = [(t, m) for t, m in zip(run.marker_times, run.markers, strict=True) if "/" in m]
        ts = run.recording.timestamps
        assert run.recording.data.shape[0] == 64 and np.all(np.diff(ts) > 0)
        assert ts[0] < stim[0][0] and ts[-1] > stim[-1][0] + cfg.window.tmax
        shown += [m for _, m in stim]
    assert shown == schedule.markers()

    profile = load_subject_profile(tmp_path, "V7")
    assert (
        profile.report_path == root / "report" / "report.md" == type(profile.report_path)(summary["report"])
    )
    text = profile.report_path.read_text()
    for png in ("quality.png", "evoked.png", "learning_curve.png", "retrieval.png"):
        assert f"]({png})" in text and (root / "report" / png).stat().st_size > 5000
    from brainstream.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(profile.encoder_dir)
    assert meta.scaler is not None and meta.subjects == ["V7"] and len(meta.ch_names) == 64
    # rsvp_fast: a 2-fold soup of the subject layer, or anchor alignment refitted on every training image
    assert profile.chosen_model in {"ridge", "adapted:subject_layer+soup2", "adapted:anchor+all"}
    if profile.chosen_model.endswith("+soup2"):
        assert "2-fold soup" in text
    assert [p.name for p in profile.runs] == [p.name for p in runs]


def test_bad_requests_are_refused_clearly(tmp_path, capsys):
    base = ["calibrate", "--subject", "V1", "--protocol", "rsvp_fast", "--out", str(tmp_path)]
    assert main([*base, "--virtual-subject", "201"]) == 2  # a pretraining subject is not a new subject
    assert "used to pretrain" in capsys.readouterr().err
    assert main(base) == 2
    assert "--stream NAME" in capsys.readouterr().err
    assert main([*base, "--stream", "x", "--speed", "5"]) == 2
    assert "--speed needs --virtual-subject" in capsys.readouterr().err
    assert main([*base, "--protocol", "nope", "--virtual-subject", "3"]) == 2
    assert not (tmp_path / "V1").exists()


def test_without_a_screen_a_person_is_refused_and_a_closed_loop_goes_offscreen(tmp_path, capsys, monkeypatch):
    """No DISPLAY: Qt would abort; a person's run says why, a virtual subject's renders offscreen."""
    import os

    for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    base = ["calibrate", "--subject", "V1", "--protocol", "rsvp_fast", "--out", str(tmp_path)]
    assert main([*base, "--stream", "some-eeg"]) == 2
    assert "no screen found" in capsys.readouterr().err
    assert main([*base, "--protocol", "nope", "--virtual-subject", "3"]) == 2  # stops after the screen check
    assert os.environ["QT_QPA_PLATFORM"] == "offscreen"
