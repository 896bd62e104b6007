"""Incremental sliding path: equals full recomputation of the causal brain module, window by window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.encoders import build_encoder
from models.incremental import CausalBrainModule, IncrementalEncoder, receptive_context
from models.runtime.onnx_runtime import OnnxRuntime, export_onnx
from models.runtime.torch_runtime import TorchRuntime
from models.windowing import sliding_window_ends

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
