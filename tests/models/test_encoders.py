"""Encoders: shapes, subject handling, config errors, ONNX export with a dynamic batch, ridge closed form."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from brainstream.models.config_base import ConfigError
from brainstream.models.encoders import DEMO_BRAIN_MODULE, build_encoder, fit_ridge
from brainstream.models.encoders.ridge import RidgeConfig, RidgeEncoder

N_CH, N_T, DIM = 12, 40, 16


def _positions(n: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).uniform(0, 1, (n, 2)).tolist()


def _brain(**kw):
    arch = dict(DEMO_BRAIN_MODULE, n_channels=N_CH, n_times=N_T, dim=DIM, positions=_positions(N_CH))
    arch.update(kw)
    return build_encoder(arch)


@pytest.mark.parametrize("aggregation", ["affine", "channel_affine", "gap", "attention"])
def test_brain_module_shapes_and_subjects(aggregation):
    torch.manual_seed(0)
    model = _brain(n_subjects=3, aggregation=aggregation).eval()
    x = torch.randn(4, N_CH, N_T)
    out = model(x, torch.tensor([0, 1, 2, 0]))
    assert out.shape == (4, DIM)
    clip, mse = model.forward_heads(x)
    assert clip.shape == mse.shape == (4, DIM)
    assert not torch.allclose(clip, mse)  # separate heads
    # subject layers start as identities: every subject gives the same output until trained
    assert torch.allclose(
        model(x, torch.tensor([1, 1, 1, 1])), model(x, torch.tensor([2, 2, 2, 2])), atol=1e-5
    )
    with torch.no_grad():
        model.subject_layer.weight[2].mul_(2.0)
    assert not torch.allclose(model(x, torch.tensor([0] * 4)), model(x, torch.tensor([2] * 4)))


def test_subject_dropout_trains_a_shared_subject_agnostic_path():
    torch.manual_seed(0)
    plain = _brain(n_subjects=3)
    assert "subject_layer.shared" not in plain.state_dict()  # without it: the checkpoints of before
    model = _brain(n_subjects=3, subject_dropout=0.5)
    x, subjects = torch.randn(64, N_CH, N_T), torch.tensor([0, 1, 2, 1] * 16)
    with torch.no_grad():
        model.subject_layer.weight.mul_(2.0)  # subject layers unlike the shared one (still the identity)
    model.eval()
    # eval: every trial goes through its own layer; subject=None through the shared one, not the mean
    shared_only = model.subject_layer.shared.detach().clone()
    assert torch.allclose(model.subject_layer.agnostic(), shared_only)
    own = model(x, subjects)
    with torch.no_grad():
        model.subject_layer.weight.copy_(shared_only.repeat(3, 1, 1))
    assert torch.allclose(model(x, None), model(x, subjects), atol=1e-5)
    assert not torch.allclose(own, model(x, None), atol=1e-3)
    # training: the shared layer stands in for about half the trials, so it gets gradients
    model.train()
    clip, _ = model.forward_heads(x, subjects)
    clip.pow(2).sum().backward()
    assert model.subject_layer.shared.grad is not None and model.subject_layer.shared.grad.abs().sum() > 0
    # the ONNX arrangement's subject-agnostic row is the shared layer too
    model.eval()
    assert torch.allclose(model.export_form()(x[:4]), model(x[:4], None), atol=1e-5)
    with pytest.raises(ValueError):
        _brain(subject_dropout=1.0)


def test_spatial_attention_weights_and_dropout():
    torch.manual_seed(0)
    model = _brain(spatial_dropout=0.3)
    sa = model.spatial
    assert torch.allclose(sa.positions, torch.tensor(_positions(N_CH), dtype=torch.float32))
    sa.eval()
    w = sa.weights()
    assert w.shape == (DEMO_BRAIN_MODULE["spatial_channels"], N_CH)
    assert torch.allclose(w.sum(dim=1), torch.ones(w.shape[0]))
    assert (w > 0).all()
    sa.train()
    zero_cols = [int((sa.weights() == 0).all(dim=0).sum()) for _ in range(30)]
    assert max(zero_cols) > 0  # some draws drop the sensors inside the disc
    assert max(zero_cols) < N_CH


def test_unknown_encoder_and_bad_keys_are_clear():
    with pytest.raises(ConfigError, match="unknown encoder 'nope'.*brain_module"):
        build_encoder({"name": "nope"})
    with pytest.raises(ConfigError, match="unknown key 'hiden'"):
        build_encoder({"name": "brain_module", "n_channels": 3, "n_times": 10, "hiden": 5})
    with pytest.raises(ConfigError, match="positions"):
        build_encoder({"name": "brain_module", "n_channels": 3, "n_times": 10, "positions": [[0, 0]]})
    with pytest.raises(ValueError, match="too short"):
        build_encoder({"name": "atm_s", "n_channels": 4, "n_times": 30, "dim": 8})


def test_atm_shapes_and_published_size():
    model = build_encoder({"name": "atm_s", "n_channels": 63, "n_times": 250, "dim": 1024, "n_subjects": 10})
    n_params = sum(p.numel() for p in model.parameters())
    assert 2.8e6 < n_params < 3.4e6  # published: 3.18 M
    model.eval()
    out = model(torch.randn(2, 63, 250), torch.tensor([0, 9]))
    assert out.shape == (2, 1024)
    assert model(torch.randn(2, 63, 250)).shape == (2, 1024)  # unseen subject: mean token


@pytest.mark.parametrize(
    "arch",
    [
        dict(DEMO_BRAIN_MODULE, n_channels=N_CH, n_times=N_T, dim=DIM, n_subjects=2),
        {"name": "atm_s", "n_channels": N_CH, "n_times": 100, "dim": DIM, "n_subjects": 2},
    ],
    ids=["brain_module", "atm_s"],
)
def test_onnx_export_dynamic_batch(arch):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_encoder(arch).eval()
    x = torch.randn(2, N_CH, arch["n_times"])
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (x, torch.tensor([0, 1])),
        buf,
        input_names=["x", "subject"],
        output_names=["embedding"],
        dynamic_axes={"x": {0: "batch"}, "subject": {0: "batch"}, "embedding": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x5, s5 = torch.randn(5, N_CH, arch["n_times"]), torch.tensor([1, 0, 1, 1, 0])
    (out,) = sess.run(None, {"x": x5.numpy(), "subject": s5.numpy()})
    with torch.no_grad():
        ref = model(x5, s5).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


def _linear_problem(n: int, p: int, d: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    W = rng.standard_normal((p, d)).astype(np.float32) / np.sqrt(p)
    Y = X @ W + 0.5 + noise * rng.standard_normal((n, d)).astype(np.float32)
    return X, Y, W


def test_ridge_recovers_linear_map_and_chooses_alpha():
    X, Y, W = _linear_problem(400, 30, 5, noise=0.01)
    fit = fit_ridge(X, Y)
    np.testing.assert_allclose(fit.weight, W, atol=0.02)
    np.testing.assert_allclose(fit.bias, 0.5, atol=0.02)
    noisy = fit_ridge(*_linear_problem(60, 200, 5, noise=3.0)[:2])
    assert noisy.alpha > fit.alpha  # more noise, fewer trials: cross-validation picks a stronger penalty
    assert len(noisy.cv_scores) == len(noisy.alphas)


def test_ridge_dual_equals_primal():
    X, Y, _ = _linear_problem(50, 40, 3, noise=0.5, seed=1)
    primal = fit_ridge(X, Y, alphas=[1.0])  # p < n: primal
    Xw = np.concatenate([X, np.zeros((50, 30), np.float32)], axis=1)  # p > n: dual, same solution
    dual = fit_ridge(Xw, Y, alphas=[1.0])
    np.testing.assert_allclose(dual.weight[:40], primal.weight, atol=1e-4)
    np.testing.assert_allclose(dual.bias, primal.bias, atol=1e-4)


def test_ridge_groups_and_bad_input():
    X, Y, _ = _linear_problem(40, 10, 2, noise=0.1)
    fit_ridge(X, Y, groups=np.repeat(np.arange(10), 4), scoring="rank")
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_ridge(X, Y)
    with pytest.raises(ValueError, match="same n"):
        fit_ridge(X[:5], Y)


def test_ridge_encoder_module_matches_fit():
    X, Y, _ = _linear_problem(80, 6 * 5, 4, noise=0.1)
    fit = fit_ridge(X, Y)
    enc = RidgeEncoder(RidgeConfig(n_channels=6, n_times=5, dim=4)).load_fit(fit)
    out = enc(torch.from_numpy(X.reshape(80, 6, 5))).detach().numpy()
    np.testing.assert_allclose(out, X @ fit.weight + fit.bias, atol=1e-4)
    with pytest.raises(ValueError, match="expects"):
        RidgeEncoder(RidgeConfig(n_channels=5, n_times=5, dim=4)).load_fit(fit)


def test_ridge_encoder_per_subject_maps():
    X1, Y1, _ = _linear_problem(60, 4 * 5, 3, noise=0.01, seed=1)
    X2, Y2, _ = _linear_problem(60, 4 * 5, 3, noise=0.01, seed=2)
    fits = [fit_ridge(X1, Y1), fit_ridge(X2, Y2)]
    enc = RidgeEncoder(RidgeConfig(n_channels=4, n_times=5, dim=3, n_subjects=2)).load_fit(fits)
    x = torch.from_numpy(np.concatenate([X1[:3], X2[:3]]).reshape(6, 4, 5))
    out = enc(x, torch.tensor([0, 0, 0, 1, 1, 1])).detach().numpy()
    np.testing.assert_allclose(out[:3], X1[:3] @ fits[0].weight + fits[0].bias, atol=1e-4)
    np.testing.assert_allclose(out[3:], X2[:3] @ fits[1].weight + fits[1].bias, atol=1e-4)
    mean_w = (fits[0].weight + fits[1].weight) / 2
    mean_b = (fits[0].bias + fits[1].bias) / 2
    np.testing.assert_allclose(enc(x).detach().numpy(), x.reshape(6, -1).numpy() @ mean_w + mean_b, atol=1e-4)
