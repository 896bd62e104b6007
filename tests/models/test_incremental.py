"""Incremental sliding path: equals full recomputation of the causal brain module, window by window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainstream.models.encoders import build_encoder
from brainstream.models.incremental import CausalBrainModule, IncrementalEncoder, receptive_context
from brainstream.models.runtime.onnx_runtime import OnnxRuntime, export_onnx
from brainstream.models.runtime.torch_runtime import TorchRuntime
from brainstream.models.windowing import sliding_window_ends
from tests.cpu import needs_native_bf16

ARCH = {"name": "brain_module", "n_channels": 12, "n_times": 30, "dim": 16, "n_subjects": 2,
        "spatial_channels": 10, "fourier_freqs": 3, "hidden": 12, "depth": 3, "out_channels": 20}  # fmt: skip


def _model(aggregation: str = "affine") -> torch.nn.Module:
    torch.manual_seed(0)
    base = build_encoder({**ARCH, "aggregation": aggregation}).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so normalisation is really exercised
        for mod in base.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return base


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny per-step ops: one thread avoids OpenMP barriers that stall on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_receptive_context_counts_every_conv():
    base = _model()
    # dilations cycle over 2**(j % 5) for j = 0..5 (kernel 3), plus one undilated GLU conv per block
    expected = sum(2 * 2 ** (j % 5) for j in range(6)) + 3 * 2
    assert receptive_context(base) == expected
    causal = CausalBrainModule(base)
    assert causal.config.n_times == 30 + expected


@pytest.mark.parametrize(
    ("aggregation", "backend"),
    [("affine", "torch"), ("affine", "onnxruntime"), ("gap", "torch"), ("attention", "onnxruntime")],
)
def test_incremental_equals_full_recomputation(aggregation, backend):
    base = _model(aggregation)
    causal = CausalBrainModule(base).eval()
    inc = IncrementalEncoder(causal, subject=1, backend=backend)
    n = 200
    x = np.random.default_rng(1).standard_normal((12, n)).astype(np.float32)
    ends = sliding_window_ends(inc.window - 1, n, inc.window, stride=3)
    rng = np.random.default_rng(2)
    s, compared = 0, 0
    for e in ends:
        # reach each sliding-window end in one or two irregular pushes
        cut = int(rng.integers(s, e + 1))
        inc.push(x[:, s:cut])
        inc.push(x[:, cut : e + 1])
        s = e + 1
        got = inc.embedding()
        window = torch.from_numpy(x[None, :, e + 1 - inc.window : e + 1])
        with torch.inference_mode():
            ref = causal(window, torch.tensor([1])).numpy()[0]
        assert _rel(got, ref) <= 1e-5
        compared += 1
    assert compared == len(ends) > 10


@needs_native_bf16
def test_bf16_incremental_step_stays_close_to_fp32():
    """bf16 weights halve what a (memory-bound) step reads; embeddings stay within bf16 rounding of fp32."""
    causal = CausalBrainModule(_model()).eval()
    fp32 = IncrementalEncoder(causal, subject=1, backend="torch")
    bf16 = IncrementalEncoder(causal, subject=1, backend="torch", precision="bf16")
    assert all(p.dtype == torch.float32 for p in causal.parameters())  # the caller's model is untouched
    x = np.random.default_rng(3).standard_normal((12, 160)).astype(np.float32)
    cosines = []
    for s in range(0, 160, 4):
        a, b = fp32.step(x[:, s : s + 4]), bf16.step(x[:, s : s + 4])
        assert (a is None) == (b is None)
        if a is not None:
            assert b.dtype == np.float32 and _rel(b, a) <= 0.1
            cosines.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    assert len(cosines) > 10 and min(cosines) >= 0.99
    with pytest.raises(ValueError, match="bf16 with backend torch"):
        IncrementalEncoder(causal, backend="onnxruntime", precision="bf16")


def test_block_pushes_equal_sample_pushes_and_not_ready_early():
    base = _model()
    causal = CausalBrainModule(base)
    a, b = IncrementalEncoder(causal, subject=0), IncrementalEncoder(causal, subject=0)
    x = np.random.default_rng(3).standard_normal((12, 200)).astype(np.float32)
    for i in range(a.window - 1):
        a.push(x[:, i : i + 1])
        assert a.embedding() is None
    a.push(x[:, a.window - 1 : 200])
    b.push(x[:, :150])
    b.push(x[:, 150:])
    assert _rel(a.embedding(), b.embedding()) <= 1e-5


def test_nonfinite_input_blanks_the_embedding_until_it_leaves_the_receptive_field():
    base = _model()
    causal = CausalBrainModule(base)
    inc, clean = IncrementalEncoder(causal, subject=0), IncrementalEncoder(causal, subject=0)
    x = np.random.default_rng(4).standard_normal((12, 400)).astype(np.float32)
    bad = x.copy()
    bad[3, 120] = np.nan
    inc.push(bad[:, :121])
    clean.push(x[:, :121])
    assert inc.embedding() is None
    inc.push(bad[:, 121 : 120 + inc.window])
    assert inc.embedding() is None  # sample 120 is still inside the last window
    inc.push(bad[:, 120 + inc.window : 121 + inc.window])
    clean.push(x[:, 121 : 121 + inc.window])
    emb = inc.embedding()
    assert emb is not None and np.all(np.isfinite(emb))
    assert _rel(emb, clean.embedding()) <= 1e-5  # finite memory: no trace of the NaN


def test_causal_module_exports_to_onnx(tmp_path):
    causal = CausalBrainModule(_model()).eval()
    x = np.random.default_rng(5).standard_normal((2, 12, causal.config.n_times)).astype(np.float32)
    ort_rt = OnnxRuntime(export_onnx(causal, tmp_path / "causal.onnx"))
    assert _rel(ort_rt.run(x, [0, 1]), TorchRuntime(causal).run(x, [0, 1])) <= 1e-4


def test_bad_input():
    inc = IncrementalEncoder(CausalBrainModule(_model()), subject=0)
    with pytest.raises(ValueError, match=r"shape \(12, s\)"):
        inc.push(np.zeros((11, 3), np.float32))
    with pytest.raises(ValueError, match="backend must be"):
        IncrementalEncoder(CausalBrainModule(_model()), backend="tensorrt")
    with pytest.raises(TypeError, match="needs a CausalBrainModule"):
        IncrementalEncoder(_model())
    with pytest.raises(TypeError, match="needs a brain module"):
        CausalBrainModule(torch.nn.Linear(3, 3))


# ------------------------------------------------------------------------------ a brain module trained causal
def test_causal_config_matches_the_module_and_refuses_short_windows():
    from brainstream.models.encoders import input_context, parse_arch

    for extra in ({}, {"depth": 2, "kernel_size": 5}, {"glu": False, "dilation_period": 3}):
        arch = {**ARCH, **extra, "n_times": 200, "causal": True}
        model = build_encoder(arch)
        config = parse_arch(arch)
        assert config.context == receptive_context(model) == input_context(arch) > 0
        assert config.n_frames == 200 - config.context == model.aggregate.proj.in_features
        partial = {k: v for k, v in arch.items() if k not in ("n_channels", "n_times", "dim", "n_subjects")}
        assert input_context(partial) == config.context  # what a training config knows before the data
    assert input_context(ARCH) == parse_arch(ARCH).context == 0
    with pytest.raises(ValueError, match="receptive context of 70 samples"):
        parse_arch({**ARCH, "n_times": 70, "causal": True})


@pytest.fixture(scope="module")
def trained_causal(tmp_path_factory):
    """A demo-size causal brain module trained a few epochs by the repo's trainer, saved and reloaded."""
    from brainstream.models.checkpoint import load_checkpoint
    from brainstream.models.training.trainer import train
    from tests.models.encoding_fixtures import synthetic, tiny_config

    threads = torch.get_num_threads()  # the trainer sets its own: restore ours after
    data = synthetic(n_train_images=60, n_test_images=10, n_times=50)  # 34 samples of context, 16 frames
    cfg = tiny_config(model={"causal": True}, optim={"max_epochs": 3, "batch_size": 16})
    out = tmp_path_factory.mktemp("causal") / "model"
    result = train(cfg, out, data=data, progress=False, evaluate_test=False)
    torch.set_num_threads(threads)
    model, meta = load_checkpoint(out)
    assert meta.causal and model.config.causal and model.config.n_times == 50
    return model, result


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_trained_causal_module_streams_exactly(trained_causal, backend, tmp_path):
    model, result = trained_causal
    x = torch.randn(2, 12, 50)
    with torch.inference_mode():
        assert torch.equal(model(x), result.model(x))
        moved = [m.running_mean.abs().max() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert min(moved) > 0  # trained: the BatchNorm statistics left their initial values
    inc = IncrementalEncoder(model, backend=backend)  # a causal brain module is accepted as it is
    assert (inc.window, inc.n_times, inc.context) == (50, 16, 34)
    n = 260
    signal = np.random.default_rng(6).standard_normal((12, n)).astype(np.float32)
    ends = sliding_window_ends(0, n, inc.window, stride=5)
    windows = np.stack([signal[:, e + 1 - inc.window : e + 1] for e in ends])
    with torch.inference_mode():
        full = model(torch.from_numpy(windows)).numpy()  # the trained model, whole windows
    ort_full = OnnxRuntime(export_onnx(model, tmp_path / "full.onnx")).run(windows)  # its export form
    assert _rel(ort_full, full) <= 1e-4
    rng = np.random.default_rng(7)
    s = 0
    for k, e in enumerate(ends):
        while s <= e:  # irregular blocks, as model-rate samples arrive live
            stop = min(e + 1, s + int(rng.integers(1, 4)))
            inc.push(signal[:, s:stop])
            s = stop
        assert _rel(inc.embedding(), full[k]) <= 1e-4
    assert len(ends) > 40
