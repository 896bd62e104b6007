"""Trainer: selection on validation only, checkpoint + metrics.json, determinism, bad input, CLI, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from brainstream.cli import main as cli_main
from brainstream.models.checkpoint import load_checkpoint
from brainstream.models.config_base import CONFIG_ROOT, load_config
from brainstream.models.training.config import TrainingConfig
from brainstream.models.training.data import DataError, carve_validation, save_encoding_data
from brainstream.models.training.ddp import parameter_digest
from brainstream.models.training.trainer import train
from tests.cpu import BF16_MISSING
from tests.models.encoding_fixtures import synthetic, tiny_config

ISSUE_KEYS = {"n_way", "top1", "top5", "median_rank", "chance_top1", "chance_top5", "ridge", "averaged"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "model"
    return train(tiny_config(selection={"lambdas": [0.0, 1.0]}), out, data=data, progress=False)


def test_train_writes_checkpoint_and_beats_chance(trained, data):
    out = trained.out_dir
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "metrics.json",
        "model.safetensors",
        "model.yaml",
        "ridge",
        "train_images.json",
        "training.json",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == ISSUE_KEYS
    assert set(metrics["ridge"]) == {"top1", "top5"} and set(metrics["averaged"]) == {"top1", "top5", "ridge"}
    assert metrics["n_way"] == 30 and metrics["chance_top5"] == pytest.approx(5 / 30)  # 200-way capped at 30
    assert metrics["top5"] > 2 * metrics["chance_top5"]
    assert metrics["ridge"]["top5"] > metrics["chance_top5"]
    model, meta = load_checkpoint(out)
    x = torch.from_numpy(data.X[:4])
    assert torch.allclose(
        model(x, torch.zeros(4, dtype=torch.long)), trained.model(x, torch.zeros(4, dtype=torch.long))
    )
    assert meta.space == "test:synthetic" and meta.subjects == ["sub-01"] and meta.metrics == metrics
    assert meta.training["chosen_lambda"] in (0.0, 1.0)
    ridge, _ = load_checkpoint(out / "ridge")
    assert ridge.config.name == "ridge"
    trained_on = set(json.loads((out / "train_images.json").read_text()))
    assert trained_on == set(data.image_ids[data.splits == "train"])


def test_lambda_selection_on_validation(trained):
    sel = trained.details["selection"]
    assert [c["lambda"] for c in sel["candidates"]] == [0.0, 1.0]
    best = min(sel["candidates"], key=lambda c: c["val_score"])
    assert sel["chosen_lambda"] == best["lambda"]
    assert trained.meta.arch["output_head"] == ("mse" if best["lambda"] == 0 else "clip")
    assert trained.details["n_val_images"] == 20  # 10 % of 200 training images, none from the test set


def test_validation_carved_from_training_images_only(data):
    tr, va = carve_validation(data, 0.1, seed=0)
    assert set(tr.image_ids).isdisjoint(va.image_ids)
    assert set(va.splits) == {"train"} and set(tr.splits) == {"train"}
    assert set(va.image_ids).isdisjoint(data.image_ids[data.splits == "test"])


def test_training_never_reads_the_test_split(data):
    poisoned = data.subset(np.ones(len(data.X), bool))
    poisoned.X = poisoned.X.copy()
    poisoned.X[poisoned.splits == "test"] = np.nan
    cfg = tiny_config(optim={"max_epochs": 2})
    result = train(cfg, None, data=poisoned, progress=False, evaluate_test=False)  # works: test never read
    assert result.metrics == {}
    with pytest.raises(DataError, match="NaN"):
        train(cfg, None, data=poisoned, progress=False)


def test_deterministic_on_cpu(data):
    cfg = tiny_config(optim={"max_epochs": 2})
    a = train(cfg, None, data=data, progress=False, evaluate_test=False)
    b = train(cfg, None, data=data, progress=False, evaluate_test=False)
    assert parameter_digest(a.model) == parameter_digest(b.model)
    c = train(
        tiny_config(optim={"max_epochs": 2}, seed=1), None, data=data, progress=False, evaluate_test=False
    )
    assert parameter_digest(c.model) != parameter_digest(a.model)


def test_augmentation_shifts_and_adds_noise():
    from brainstream.models.training.trainer import augment

    x = torch.arange(10, dtype=torch.float32).repeat(4, 2, 1)  # (4, 2, 10)
    gen = torch.Generator().manual_seed(0)
    y = augment(x, 2, 0.0, gen)
    for row in y:
        d = row[0, 5] - x[0, 0, 5]
        assert abs(d) <= 2 and torch.equal(row[0], row[1])  # one shift per trial, all channels alike
        assert torch.allclose(row[0, 3:7], x[0, 0, 3:7] + d)
    z = augment(x, 0, 0.5, gen)
    assert 0.3 < float((z - x).std()) < 0.7


def test_augmentation_flips_whole_trials_polarity():
    from brainstream.models.training.trainer import augment

    x = torch.randn(64, 3, 10, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, 0.0, gen, sign_flip=1.0), -x)
    y = augment(x, 0, 0.0, gen, sign_flip=0.5)
    flipped = [bool(torch.equal(y[k], -x[k])) for k in range(len(x))]
    kept = [bool(torch.equal(y[k], x[k])) for k in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # every trial whole: all channels alike
    assert 10 < sum(flipped) < 54
    assert torch.equal(augment(x, 0, 0.0, gen), x)  # off by default


def test_bad_input_refused(data):
    cfg = tiny_config(optim={"max_epochs": 1})
    leaky = data.subset(np.ones(len(data.X), bool))
    leaky.image_ids = leaky.image_ids.copy()
    leaky.image_ids[0] = leaky.image_ids[leaky.splits == "test"][0]
    with pytest.raises(DataError, match="test images also appear in training"):
        train(cfg, None, data=leaky, progress=False)
    with pytest.raises(DataError, match="training split is empty"):
        train(cfg, None, data=data.split("test"), progress=False)
    with pytest.raises(DataError, match="test split is empty"):
        train(cfg, None, data=data.split("train"), progress=False)


def test_multi_subject_training(tmp_path):
    two = synthetic(n_train_images=120, n_test_images=20, n_subjects=2)
    result = train(tiny_config(optim={"max_epochs": 3}), tmp_path / "m", data=two, progress=False)
    assert result.meta.subjects == ["sub-01", "sub-02"]
    assert result.model.subject_layer.weight.shape[0] == 2
    assert set(result.details["per_subject"]) == {"sub-01", "sub-02"}


def test_config_schema_and_shipped_configs():
    for path in sorted((CONFIG_ROOT / "training").glob("*.yaml")):
        load_config(path, TrainingConfig)
    with pytest.raises(ValueError, match="come from the data"):
        tiny_config(model={"name": "brain_module", "n_channels": 3})
    with pytest.raises(ValueError, match="ridge is fitted as the baseline"):
        tiny_config(model={"name": "ridge"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_config(selection={"lambdas": [1.5]})


def test_train_and_evaluate_cli(tmp_path, data, capsys):
    save_encoding_data(tmp_path / "trials.npz", data)
    cfg = tiny_config(optim={"max_epochs": 3}).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ckpt"
    rc = cli_main(["train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(tmp_path / "trials.npz"),
                   "--out", str(out), "--json", "--quiet"])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["metrics"]) == ISSUE_KEYS and (out / "metrics.json").is_file()
    rc = cli_main(["evaluate", "--checkpoint", str(out), "--data", str(tmp_path / "trials.npz"),
                   "--n-way", "200", "--json", "--quiet"])  # fmt: skip
    assert rc == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(ev) >= ISSUE_KEYS and ev["ridge_source"].startswith("the checkpoint's ridge")
    assert ev["top5"] == pytest.approx(report["metrics"]["top5"])  # same split, same model, same numbers
    assert Path(ev["time_resolved_plot"]).is_file()
    # bf16 arithmetic: the same evaluation within bf16 rounding (a retrieval may flip a near-tie, not more)
    rc = cli_main(["evaluate", "--checkpoint", str(out), "--data", str(tmp_path / "trials.npz"),
                   "--n-way", "200", "--json", "--quiet", "--no-time-resolved",
                   "--precision", "bf16"])  # fmt: skip
    bf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    if BF16_MISSING is not None:  # a CPU without bf16 units: refused, saying what to use instead
        assert rc == 2 and "use 'fp32'" in bf["error"]
    else:
        assert rc == 0 and bf["precision"] == "bf16" and ev["precision"] == "fp32"
        assert bf["ridge"] == ev["ridge"]  # the baseline stays fp32
        assert abs(bf["top5"] - ev["top5"]) <= 0.05 and abs(bf["median_rank"] - ev["median_rank"]) <= 2
    rc = cli_main(["train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(tmp_path / "nope.npz"),
                   "--out", str(out)])  # fmt: skip
    assert rc == 2 and "data not found" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path):
    small = synthetic(n_train_images=100, n_test_images=20, n_ch=8, n_times=20)
    save_encoding_data(tmp_path / "trials.npz", small)
    cfg = tiny_config(optim={"max_epochs": 2, "batch_size": 32}).model_dump(mode="json")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "brainstream.models.training.ddp", "--config", str(tmp_path / "cfg.yaml"),
        "--data", str(tmp_path / "trials.npz"), "--out", str(tmp_path / "ckpt"),
        "--digest-dir", str(tmp_path / "d"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [json.loads((tmp_path / "d" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["world_size"] for d in digests] == [2, 2]
    assert digests[0]["digest"] == digests[1]["digest"]  # DDP kept the ranks' weights identical
    model, _ = load_checkpoint(tmp_path / "ckpt")
    assert parameter_digest(model) == digests[0]["digest"]
    assert set(json.loads((tmp_path / "ckpt" / "metrics.json").read_text())) == ISSUE_KEYS


def test_causal_model_trains_on_windows_widened_by_its_context(tmp_path, capsys):
    from brainstream.models.embedders import l2_normalise
    from brainstream.models.gallery import Gallery
    from brainstream.models.training.loading import load_data
    from tests.models.test_datasets import _events, _write_xdf

    ids = [f"img{i:02d}" for i in range(30)]
    emb = l2_normalise(np.random.default_rng(1).normal(size=(30, 8)))
    gallery = Gallery.save(tmp_path / "gallery", embeddings=emb, ids=ids, space="test:xdf:8", embedder="t")
    _write_xdf(tmp_path / "rec.xdf", gallery, _events(seed=2))
    common = {
        "data": {"kind": "xdf", "paths": [str(tmp_path / "rec.xdf")], "gallery": str(tmp_path / "gallery")},
        "preprocessing": {"l_freq": 0.5, "h_freq": 30.0, "sfreq_out": 100.0, "robust_scale": False,
                          "baseline": None},
        "window": {"tmin": -0.1, "tmax": 0.5},
        "optim": {"max_epochs": 2, "batch_size": 16},
    }  # fmt: skip
    causal, padded = tiny_config(**common, model={"causal": True}), tiny_config(**common)
    assert (causal.context, padded.context) == (34, 0)  # the demo-size stack's receptive field - 1
    assert causal.input_window() == pytest.approx((-0.44, 0.5)) and padded.input_window() == (-0.1, 0.5)
    data, ref = load_data(causal, progress=False), load_data(padded, progress=False)
    assert data.n_times == ref.n_times + 34 == 94 and data.tmin == pytest.approx(-0.44)
    np.testing.assert_array_equal(data.X[..., 34:], ref.X)  # the same windows, with their history before
    result = train(causal, tmp_path / "ckpt", data=data, progress=False)
    model, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta.causal and model.config.causal and meta.context == 34 and meta.n_times == 94
    assert (meta.tmin, meta.tmax) == pytest.approx((-0.44, 0.5))
    # evaluation re-cuts the recording with the checkpoint's window: the same trials, the same numbers
    rc = cli_main(["evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "rec.xdf"),
                   "--n-way", "200", "--json", "--quiet"])  # fmt: skip
    assert rc == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["top5"] == pytest.approx(result.metrics["top5"])


def test_causal_config_errors():
    with pytest.raises(ValueError, match="receptive contexts of \\[8, 34\\] samples"):
        tiny_config(model={"causal": True}, selection={"model_overrides": [{}, {"depth": 1}]})
    with pytest.raises(ValueError, match="needs preprocessing.sfreq_out"):
        tiny_config(model={"causal": True}, data={"kind": "xdf"}, preprocessing={"sfreq_out": None})
    tiny_config(model={"causal": True}, selection={"model_overrides": [{}, {"hidden": 16}]})  # same context
