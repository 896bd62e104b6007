"""Checkpoint folders: round trip, and refusal of pickled, corrupt and mismatched files (never unpickling)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from brainstream.models.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from brainstream.models.encoders import DEMO_BRAIN_MODULE, build_encoder

N_CH, N_T, DIM = 10, 30, 8
CH = [f"MEG{i:03d}" for i in range(N_CH)]


def _model_and_meta():
    torch.manual_seed(0)
    pos = np.random.default_rng(0).uniform(0, 1, (N_CH, 2)).round(4).tolist()
    arch = dict(DEMO_BRAIN_MODULE, n_channels=N_CH, n_times=N_T, dim=DIM, n_subjects=2, positions=pos)
    model = build_encoder(arch)
    meta = CheckpointMeta(
        arch=arch,
        modality="meg",
        ch_names=CH,
        positions=pos,
        sfreq=60.0,
        tmin=-0.1,
        tmax=0.4,
        preprocessing={"l_freq": 0.1, "h_freq": 20.0},
        scaler={"center": [0.0] * N_CH, "scale": [1.0] * N_CH},
        space="demo:test",
        dim=DIM,
        subjects=["s1", "s2"],
        metrics={"top5": 0.5},
    )
    return model, meta


def test_round_trip(tmp_path):
    model, meta = _model_and_meta()
    with torch.no_grad():  # make the running stats non-default so they must travel too
        model.train()(torch.randn(8, N_CH, N_T), torch.tensor([0, 1] * 4))
    save_checkpoint(tmp_path / "ckpt", model, meta)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.safetensors", "model.yaml"]
    loaded, meta2 = load_checkpoint(tmp_path / "ckpt")
    assert not loaded.training
    x, s = torch.randn(3, N_CH, N_T), torch.tensor([0, 1, 1])
    model.eval()
    assert torch.allclose(loaded(x, s), model(x, s))
    assert torch.allclose(loaded.spatial.positions, model.spatial.positions)
    assert meta2.ch_names == CH and meta2.space == "demo:test" and meta2.subjects == ["s1", "s2"]
    assert meta2.created is not None and meta2.metrics == {"top5": 0.5}
    assert "positions" not in meta2.arch and meta2.positions == meta.positions
    assert read_meta(tmp_path / "ckpt").n_times == N_T


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_refused_without_unpickling(tmp_path):
    model, meta = _model_and_meta()
    save_checkpoint(tmp_path, model, meta)
    marker = tmp_path / "pwned"
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(_Evil(marker), protocol=4))
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(tmp_path)
    assert not marker.exists()
    torch.save(model.state_dict(), tmp_path / "model.safetensors")  # torch zip archive
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"model.safetensors is missing.*model.pt.*refused"):
        load_checkpoint(tmp_path)


def test_corrupt_files_refused(tmp_path):
    model, meta = _model_and_meta()
    save_checkpoint(tmp_path, model, meta)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        load_checkpoint(tmp_path)
    weights.write_bytes(b"\x00\x01")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path)
    weights.write_bytes(good)
    (tmp_path / "model.yaml").write_text("arch: [unclosed\n")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_mismatched_weights_and_meta_refused(tmp_path):
    model, meta = _model_and_meta()
    save_checkpoint(tmp_path, model, meta)
    data = yaml.safe_load((tmp_path / "model.yaml").read_text())
    data["arch"]["hidden"] = DEMO_BRAIN_MODULE["hidden"] + 16  # weights were saved for the demo size
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="do not match.*shape mismatch"):
        load_checkpoint(tmp_path)
    data["arch"]["hidden"] = DEMO_BRAIN_MODULE["hidden"]
    data["ch_names"] = CH[:-1]
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="expects 10 channels but ch_names lists 9"):
        load_checkpoint(tmp_path)
    data["ch_names"] = CH
    data["surprise"] = 1
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="unknown key 'surprise'"):
        load_checkpoint(tmp_path)
    other = build_encoder({"name": "atm_s", "n_channels": N_CH, "n_times": 100, "dim": DIM})
    with pytest.raises(CheckpointError, match="do not match"):
        save_checkpoint(tmp_path / "bad", other, meta)
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_channel_check():
    _, meta = _model_and_meta()
    meta.check_channels(CH)
    with pytest.raises(CheckpointError, match=r"missing \['MEG009'\].*unexpected \['EEG1'\]"):
        meta.check_channels(CH[:-1] + ["EEG1"])
    with pytest.raises(CheckpointError, match="another order"):
        meta.check_channels(CH[::-1])


def test_causal_checkpoint_loads_as_causal(tmp_path):
    from brainstream.models.incremental import receptive_context
    from brainstream.models.runtime.base import weights_digest

    _, meta = _model_and_meta()
    n_in = 50  # the demo-size stack's receptive context is 34 samples: 16 aggregated frames
    arch = {**meta.arch, "n_times": n_in, "causal": True}
    model = build_encoder(arch).eval()
    save_checkpoint(tmp_path / "ckpt", model, meta.model_copy(update={"arch": arch, "tmin": 0.4 - n_in / 60}))
    loaded, meta2 = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.causal and meta2.causal and meta2.arch["causal"] is True
    assert meta2.context == loaded.config.context == receptive_context(loaded) == 34
    assert meta2.n_times == n_in and round((meta2.tmax - meta2.tmin) * meta2.sfreq) == n_in
    assert all(conv.padding == (0,) for block in loaded.blocks for conv in block.convs)
    x, s = torch.randn(3, N_CH, n_in), torch.tensor([0, 1, 1])
    assert torch.allclose(loaded(x, s), model(x, s))
    assert not read_meta(tmp_path / "ckpt").model_copy(update={"arch": meta.arch}).causal
    # gap aggregation: the causal and padded modules share every weight shape but not their function, so
    # exports cached by weights digest must not be mixed up
    gap = {**arch, "aggregation": "gap"}
    causal_gap, padded_gap = build_encoder(gap), build_encoder({**gap, "causal": False})
    padded_gap.load_state_dict(causal_gap.state_dict())
    assert weights_digest(causal_gap) != weights_digest(padded_gap)
