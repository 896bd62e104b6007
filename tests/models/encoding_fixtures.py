"""Small synthetic brain-like trials for trainer/evaluation tests (the simulator-based tests use the real
virtual subject; these keep unit tests fast). Responses are a NONLINEAR function of the image embedding
mixed into sensors, plus noise, with per-subject mixing and latencies."""

from __future__ import annotations

import numpy as np

from brainstream.models.training.data import EncodingData


def synthetic(
    n_train_images: int = 200,
    n_test_images: int = 30,
    test_reps: int = 2,
    n_ch: int = 12,
    n_times: int = 30,
    dim: int = 8,
    snr: float = 2.0,
    n_subjects: int = 1,
    seed: int = 0,
) -> EncodingData:
    rng = np.random.default_rng(seed)
    n_img = n_train_images + n_test_images
    emb = rng.standard_normal((n_img, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.array([f"img{i:04d}" for i in range(n_img)])
    n_src = 8
    proj = rng.standard_normal((dim, n_src))
    t = np.arange(n_times) / n_times
    X, img_of, split, subj = [], [], [], []
    for s in range(n_subjects):
        srng = np.random.default_rng(seed + 100 + s)
        mixing = srng.standard_normal((n_ch, n_src))
        latency = 0.3 + 0.1 * srng.random(n_src)
        for img in range(n_img):
            z = emb[img] @ proj
            amp = np.abs(z) + 0.3 * z
            src = amp[:, None] * np.exp(
                -((t[None] - latency[:, None] - 0.05 * np.sin(3 * z)[:, None]) ** 2) / 0.005
            )
            for _ in range(1 if img < n_train_images else test_reps):
                X.append(mixing @ src + srng.standard_normal((n_ch, n_times)) / snr)
                img_of.append(img)
                split.append("train" if img < n_train_images else "test")
                subj.append(s)
    img_of = np.array(img_of)
    return EncodingData(
        X=np.array(X, np.float32),
        image_ids=ids[img_of],
        splits=np.array(split),
        subjects=np.array(subj),
        subject_names=[f"sub-{k + 1:02d}" for k in range(n_subjects)],
        targets=emb[img_of].astype(np.float32),
        ch_names=[f"EEG{k:03d}" for k in range(n_ch)],
        sfreq=50.0,
        tmin=-0.1,
        space="test:synthetic",
        positions=rng.uniform(0, 1, (n_ch, 2)),
        modality="eeg",
        preprocessing={"l_freq": 0.1, "h_freq": 20.0, "sfreq_out": 50.0},
    )


def tiny_config(**overrides):
    """A TrainingConfig for the tiny synthetic data (demo-size brain module, few epochs, one thread)."""
    from brainstream.models.encoders import DEMO_BRAIN_MODULE
    from brainstream.models.training.config import TrainingConfig

    cfg = {
        "name": "test",
        "data": {"kind": "npz"},
        "window": {"tmin": -0.1, "tmax": 0.5},
        "model": dict(DEMO_BRAIN_MODULE),
        "optim": {"max_epochs": 15, "batch_size": 64, "lr": 3e-3, "patience": 10},
        "selection": {"lambdas": [1.0]},
        "evaluation": {"n_way": 200},
        "device": "cpu",
        "num_threads": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return TrainingConfig.model_validate(cfg)
