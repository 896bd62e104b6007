"""Subject profiles: the interface `brainstream live --subject ID` calls, round trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from brainstream.calibration.profile import (
    ProfileError,
    SubjectProfile,
    load_subject_profile,
    save_subject_profile,
)
from brainstream.models.checkpoint import CheckpointMeta, load_checkpoint
from brainstream.models.encoders import build_encoder
from brainstream.models.preprocessing import RobustScaler

CH = ["O1", "Oz", "O2", "Pz"]


def _model_meta(scaler: RobustScaler | None):
    arch = {"name": "brain_module", "n_channels": 4, "n_times": 10, "dim": 8, "spatial_channels": 4,
            "fourier_freqs": 2, "hidden": 4, "depth": 1, "out_channels": 8}  # fmt: skip
    torch.manual_seed(0)
    model = build_encoder(arch)
    meta = CheckpointMeta(
        arch=arch, modality="eeg", ch_names=CH, positions=np.random.default_rng(0).random((4, 2)).tolist(),
        sfreq=50.0, tmin=-0.1, tmax=0.1, space="test:space", dim=8, subjects=["S01"],
        scaler=None if scaler is None else scaler.to_dict(),
    )  # fmt: skip
    return model, meta


def _scaler() -> RobustScaler:
    return RobustScaler(center=[1.0, 2.0, 3.0, 4.0], scale=[0.5, 1.5, 2.5, 3.5], ch_names=CH)


def test_save_then_load_gives_a_checkpoint_with_the_subjects_scaler(tmp_path):
    model, meta = _model_meta(_scaler())
    report = tmp_path / "S01" / "report" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# report\n")
    prof = save_subject_profile(
        tmp_path, "S01", model=model, meta=meta, chosen_model="adapted:light",
        metrics={"adapted": {"top5": 0.5}}, report_path=report, protocol={"name": "rsvp"},
        runs=[tmp_path / "S01" / "runs" / "run-001.xdf"], virtual_subject=7,
    )  # fmt: skip
    loaded = load_subject_profile(tmp_path, "S01")
    assert isinstance(loaded, SubjectProfile)
    assert loaded.encoder_dir == tmp_path / "S01" / "encoder" and prof.encoder_dir == loaded.encoder_dir
    assert loaded.chosen_model == "adapted:light" and loaded.metrics["adapted"]["top5"] == 0.5
    assert loaded.report_path == report and loaded.virtual_subject == 7
    assert loaded.runs == [tmp_path / "S01" / "runs" / "run-001.xdf"]
    m2, meta2 = load_checkpoint(loaded.encoder_dir)  # a full checkpoint folder (models.checkpoint format)
    assert RobustScaler.from_dict(meta2.scaler).scale.tolist() == [0.5, 1.5, 2.5, 3.5]
    assert loaded.scaler.center.tolist() == [1.0, 2.0, 3.0, 4.0]
    x = torch.randn(2, 4, 10)
    assert torch.allclose(model.eval()(x), m2(x))
    # overwriting (a recalibration) replaces the encoder and keeps the folder valid
    model_b, meta_b = _model_meta(RobustScaler(center=[0.0] * 4, scale=[1.0] * 4, ch_names=CH))
    save_subject_profile(tmp_path, "S01", model=model_b, meta=meta_b, chosen_model="ridge")
    again = load_subject_profile(tmp_path, "S01")
    assert again.chosen_model == "ridge" and again.scaler.scale.tolist() == [1.0] * 4
    assert not [p for p in (tmp_path / "S01").iterdir() if p.name.startswith(".encoder")]


def test_live_verb_resolves_the_encoder_through_the_profile(tmp_path):
    from brainstream.cli import UserFacingError
    from brainstream.cli.live import _subject_checkpoint

    model, meta = _model_meta(_scaler())
    save_subject_profile(tmp_path, "S02", model=model, meta=meta, chosen_model="adapted:subject_layer")
    assert _subject_checkpoint(str(tmp_path), "S02") == tmp_path / "S02" / "encoder"
    with pytest.raises(UserFacingError, match="brainstream calibrate --subject S03"):
        _subject_checkpoint(str(tmp_path), "S03")


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ProfileError, match="no subject 'X1'"):
        load_subject_profile(tmp_path, "X1")
    (tmp_path / "X1" / "runs").mkdir(parents=True)
    with pytest.raises(ProfileError, match="did not finish.*resumes"):
        load_subject_profile(tmp_path, "X1")
    with pytest.raises(ProfileError, match="invalid subject id"):
        load_subject_profile(tmp_path, "../etc")
    model, meta = _model_meta(None)
    with pytest.raises(ProfileError, match="no scaler"):
        save_subject_profile(tmp_path, "X2", model=model, meta=meta, chosen_model="ridge")
    model, meta = _model_meta(_scaler())
    save_subject_profile(tmp_path, "X3", model=model, meta=meta, chosen_model="ridge")
    path = tmp_path / "X3" / "profile.yaml"
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "surprise": 1}))
    with pytest.raises(ProfileError, match="corrupt"):
        load_subject_profile(tmp_path, "X3")
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "X3" / "encoder" / "model.safetensors").write_bytes(b"\x80\x04pickle")
    load_subject_profile(tmp_path, "X3")  # metadata still fine: the weights are checked when loaded
    from brainstream.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "X3" / "encoder")
    (tmp_path / "X3" / "encoder" / "model.yaml").unlink()
    with pytest.raises(ProfileError, match="unusable"):
        load_subject_profile(tmp_path, "X3")
