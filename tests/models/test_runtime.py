"""Encoder runtimes against torch eager: ONNX Runtime ≤ 1e-4 relative (real onnxruntime), TensorRT fp16 ≤ 1e-2
(only where a CUDA GPU with torch-tensorrt exists), torch.compile; selection, checkpoints, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from brainstream.models.encoders import build_encoder
from brainstream.models.runtime import (
    EncoderSignature,
    choose_backend,
    create_runtime,
    load_runtime,
    signature_of,
)
from brainstream.models.runtime.onnx_runtime import OnnxRuntime, export_onnx, read_onnx_signature
from brainstream.models.runtime.tensorrt_runtime import tensorrt_unavailable_reason
from brainstream.models.runtime.torch_runtime import TorchRuntime
from tests.cpu import BF16_MISSING, needs_native_bf16


class SmallConvEncoder(nn.Module):
    """A small conv encoder with a subject layer, independent of models.encoders."""

    def __init__(self, n_channels: int = 8, n_times: int = 40, dim: int = 16, n_subjects: int = 3) -> None:
        super().__init__()
        self.config = EncoderSignature(n_channels, n_times, dim, n_subjects)
        self.subject = nn.Parameter(
            torch.eye(n_channels).repeat(n_subjects, 1, 1)
            + 0.1 * torch.randn(n_subjects, n_channels, n_channels)
        )
        self.conv1 = nn.Conv1d(n_channels, 32, 5, padding=2)
        self.bn = nn.BatchNorm1d(32)
        self.conv2 = nn.Conv1d(32, 32, 3, dilation=2, padding=2)
        self.head = nn.Linear(32 * n_times, dim)
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        w = self.subject.mean(0)[None] if subject is None else self.subject[subject]
        x = torch.matmul(w, x)
        x = nn.functional.gelu(self.bn(self.conv1(x)))
        x = x + nn.functional.gelu(self.conv2(x))
        return self.head(x.flatten(1))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _windows(sig: EncoderSignature, batch: int, seed: int = 0) -> np.ndarray:
    return (
        np.random.default_rng(seed).standard_normal((batch, sig.n_channels, sig.n_times)).astype(np.float32)
    )


ENCODERS = {
    "small_conv": lambda: SmallConvEncoder(),
    "brain_module": lambda: build_encoder(
        {
            "name": "brain_module",
            "n_channels": 20,
            "n_times": 60,
            "dim": 32,
            "n_subjects": 2,
            "spatial_channels": 16,
            "fourier_freqs": 4,
            "hidden": 24,
            "depth": 2,
            "out_channels": 48,
        }
    ),  # fmt: skip
    "atm_s": lambda: build_encoder(
        {"name": "atm_s", "n_channels": 12, "n_times": 100, "dim": 32, "n_subjects": 2}
    ),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_onnxruntime_matches_torch_eager(name, tmp_path):
    torch.manual_seed(0)
    model = ENCODERS[name]().eval()
    sig = signature_of(model)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    assert read_onnx_signature(path) == sig
    ref = TorchRuntime(model)
    ort_rt = OnnxRuntime(path, intra_op_threads=1)
    assert ort_rt.describe()["provider"] == "CPUExecutionProvider"
    for batch in (1, 5):  # the batch axis is dynamic
        x = _windows(sig, batch, seed=batch)
        subject = np.arange(batch) % sig.n_subjects
        a, b = ort_rt.run(x, subject), ref.run(x, subject)
        assert a.shape == (batch, sig.dim) and a.dtype == np.float32
        assert _rel(a, b) <= 1e-4


@needs_native_bf16
@pytest.mark.parametrize("name", ["brain_module", "atm_s"])
def test_torch_bf16_runtime_stays_within_the_reduced_precision_tolerance(name):
    torch.manual_seed(0)
    model = ENCODERS[name]().eval()
    sig = signature_of(model)
    ref, bf16 = TorchRuntime(model), TorchRuntime(model, precision="bf16")
    assert bf16.describe()["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is left as it was
    x = _windows(sig, 6, seed=3)
    subject = np.arange(6) % sig.n_subjects
    a, b = bf16.run(x, subject), ref.run(x, subject)
    assert a.dtype == np.float32 and a.shape == (6, sig.dim)
    assert 0 < _rel(a, b) <= 5e-2  # bf16 rounds 8x coarser than fp16: not identical, close
    cosine = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.999  # retrieval compares directions: those barely move


def test_precisions_a_backend_cannot_run_are_refused(tmp_path):
    from brainstream.realtime.pipeline_config import EncoderConfig

    model = ENCODERS["small_conv"]().eval()
    with pytest.raises(ValueError, match="runtime: torch for bf16"):
        create_runtime(model, "onnxruntime", precision="bf16", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a GPU"):
        TorchRuntime(model, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchRuntime(model, precision="int8")
    if BF16_MISSING is None:
        assert (
            create_runtime(model, "torch", device="cpu", precision="bf16").describe()["precision"] == "bf16"
        )
    else:  # refused, saying what to use instead
        with pytest.raises(ValueError, match="use 'fp32'"):
            create_runtime(model, "torch", device="cpu", precision="bf16")
    assert EncoderConfig(checkpoint="x", runtime="torch", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError):
        EncoderConfig(checkpoint="x", precision="int8")


def test_brain_module_exports_in_its_onnx_form(tmp_path):
    """The export form (BN folded, 2-D conv layout, merged input maps) is the same function as the model,
    for every subject and for subject=None (their mean), and it is what ends up in the ONNX file."""
    import onnx

    torch.manual_seed(2)
    model = ENCODERS["brain_module"]()
    with torch.no_grad():  # non-trivial BatchNorm statistics and distinct subject layers
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
        model.subject_layer.weight.add_(0.1 * torch.randn_like(model.subject_layer.weight))
    with pytest.raises(ValueError, match="eval"):
        model.train().export_form()
    model.eval()
    form = model.export_form().eval()
    x = torch.from_numpy(_windows(signature_of(model), 3))
    with torch.no_grad():
        for subject in (None, torch.tensor([0, 1, 1])):
            assert _rel(form(x, subject).numpy(), model(x, subject).numpy()) <= 1e-5
        assert (
            _rel(model(x, torch.tensor([0, 0, 0])).numpy(), model(x, torch.tensor([1, 1, 1])).numpy()) > 1e-3
        )
    graph = onnx.load(str(export_onnx(model, tmp_path / "bm.onnx"))).graph
    ops = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in ops
    weights = {init.name: init.dims for init in graph.initializer}
    conv_ranks = {len(weights[node.input[1]]) for node in graph.node if node.op_type == "Conv"}
    assert conv_ranks == {4}


def test_subject_index_is_honoured_and_required():
    torch.manual_seed(1)
    model = SmallConvEncoder()
    rt = TorchRuntime(model)
    x = _windows(rt.signature, 2)
    assert _rel(rt.run(x, 0), rt.run(x, 1)) > 1e-3
    np.testing.assert_array_equal(rt.run(x, np.array([0, 1]))[1], rt.run(x, 1)[1])
    with pytest.raises(ValueError, match="3 subject layers: pass subject indices"):
        rt.run(x)
    with pytest.raises(ValueError, match="out of range 0..2"):
        rt.run(x, 3)


def test_bad_input_shapes_are_explained(tmp_path):
    model = SmallConvEncoder(n_subjects=1)
    rt = OnnxRuntime(export_onnx(model, tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match=r"use x\[None\]"):
        rt.run(np.zeros((8, 40), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, 8 channels, 40 samples\), got \(1, 7, 40\)"):
        rt.run(np.zeros((1, 7, 40), np.float32))
    # float64 input is converted, not rejected
    assert rt.run(np.zeros((1, 8, 40))).shape == (1, 16)
    with pytest.raises(FileNotFoundError, match="brainstream export"):
        OnnxRuntime(tmp_path / "absent.onnx")


def test_auto_selection_logs_choice_and_reason(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSTREAM_CACHE", str(tmp_path))
    backend, reason = choose_backend("auto")
    trt_reason = tensorrt_unavailable_reason()
    if trt_reason is None:
        assert backend == "tensorrt"
    else:
        assert backend == "onnxruntime" and trt_reason in reason
        with caplog.at_level(logging.INFO, logger="brainstream.models.runtime.select"):
            rt = create_runtime(SmallConvEncoder(n_subjects=1), "auto")
        assert rt.name == "onnxruntime"
        assert any("encoder runtime: onnxruntime" in r.getMessage() for r in caplog.records)
        with pytest.raises(RuntimeError, match="use 'onnxruntime'"):
            choose_backend("tensorrt")
    with pytest.raises(ValueError, match="choose one of: auto, torch"):
        choose_backend("openvino")


def test_load_runtime_from_checkpoint_reuses_a_matching_export(tmp_path, monkeypatch):
    from brainstream.models.checkpoint import CheckpointMeta, save_checkpoint

    monkeypatch.setenv("BRAINSTREAM_CACHE", str(tmp_path / "cache"))
    arch = {"name": "brain_module", "n_channels": 6, "n_times": 30, "dim": 8, "spatial_channels": 8,
            "fourier_freqs": 3, "hidden": 8, "depth": 1, "out_channels": 16}  # fmt: skip
    torch.manual_seed(2)
    model = build_encoder(arch).eval()
    meta = CheckpointMeta(
        arch=arch, ch_names=[f"C{i}" for i in range(6)], sfreq=120.0, tmin=0.0, tmax=0.25, space="test", dim=8
    )
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, model, meta)
    rt, meta2 = load_runtime(ckpt, "onnxruntime")
    assert meta2.space == "test"
    x = _windows(rt.signature, 3)
    assert _rel(rt.run(x), TorchRuntime(model).run(x)) <= 1e-4
    first = rt.path
    assert first.parent == tmp_path / "cache" / "onnx"
    # an export placed in the checkpoint from the same weights is used as is
    first.rename(ckpt / "model.onnx")
    rt2, _ = load_runtime(ckpt, "onnxruntime")
    assert rt2.path == ckpt / "model.onnx"
    # one from other weights is not
    torch.manual_seed(3)
    export_onnx(build_encoder(arch), ckpt / "model.onnx")
    rt3, _ = load_runtime(ckpt, "onnxruntime")
    assert rt3.path != ckpt / "model.onnx"
    assert _rel(rt3.run(x), TorchRuntime(model).run(x)) <= 1e-4


@pytest.mark.skipif(
    tensorrt_unavailable_reason() is not None, reason=f"TensorRT: {tensorrt_unavailable_reason()}"
)
def test_tensorrt_fp16_matches_torch_eager(tmp_path):
    from brainstream.models.runtime.tensorrt_runtime import TensorRTRuntime, build_engine

    torch.manual_seed(0)
    model = ENCODERS["brain_module"]().eval()
    sig = signature_of(model)
    path = build_engine(model, tmp_path / "enc.ep", sig, precision="fp16", max_batch=4, subject=1)
    rt = TensorRTRuntime(path)
    ref = TorchRuntime(model)
    for batch in (1, 4):
        x = _windows(sig, batch)
        assert _rel(rt.run(x, 1), ref.run(x, 1)) <= 1e-2


def test_compile_runtime_matches_torch_eager():
    """Real dynamo graph capture + AOTAutograd; Inductor's C++ code generation takes over a minute on two
    cores, so its kernels are exercised by `brainstream bench encoder --backend compile` instead."""
    from brainstream.models.runtime.compile_runtime import CompileRuntime

    torch.manual_seed(4)
    model = SmallConvEncoder().eval()
    x = _windows(signature_of(model), 2)
    ref = TorchRuntime(model).run(x, 1)
    rt = CompileRuntime(model, backend="aot_eager")
    rt.warmup(1, batch=2)
    assert _rel(rt.run(x, 1), ref) <= 1e-4
    assert CompileRuntime(model).mode == "default" and not CompileRuntime(model).cuda_graphs  # CPU


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (none on this machine)"
)
def test_compile_runtime_cuda_graphs_replay_from_another_thread():
    """The decoder warms the runtime up on one thread and calls it from its loop thread; the captured CUDA
    graphs must replay there, and equal eager for every batch size."""
    import threading

    from brainstream.models.runtime.compile_runtime import CompileRuntime

    torch.manual_seed(4)
    model = SmallConvEncoder().eval()
    x = _windows(signature_of(model), 2)
    ref = TorchRuntime(model, device="cuda").run(x, np.array([1, 1]))
    rt = CompileRuntime(model, device="cuda")
    assert rt.cuda_graphs
    rt.warmup(1, batch=2)
    results = {}
    caller = threading.Thread(target=lambda: results.setdefault("other", rt.run(x, 1)))
    caller.start()
    caller.join()
    assert _rel(results["other"], ref) <= 1e-3 and _rel(rt.run(x[:1], 1), ref[:1]) <= 1e-3


def test_export_cli_writes_a_reusable_onnx_file(tmp_path, capsys, monkeypatch):
    import json

    from brainstream.cli import main
    from brainstream.models.checkpoint import CheckpointMeta, save_checkpoint

    monkeypatch.setenv("BRAINSTREAM_CACHE", str(tmp_path / "cache"))
    arch = {"name": "atm_s", "n_channels": 5, "n_times": 100, "dim": 8, "n_subjects": 2}
    torch.manual_seed(5)
    model = build_encoder(arch).eval()
    meta = CheckpointMeta(
        arch=arch, ch_names=[f"E{i}" for i in range(5)], sfreq=250.0, tmin=0.0, tmax=0.4, space="demo", dim=8
    )
    save_checkpoint(tmp_path / "ckpt", model, meta)
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--backend", "onnx", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["path"] == str(tmp_path / "ckpt" / "model.onnx")
    assert result["max_rel_err_vs_torch"] <= 1e-4 and result["signature"]["n_subjects"] == 2
    rt, _ = load_runtime(tmp_path / "ckpt", "onnxruntime")
    assert rt.path == tmp_path / "ckpt" / "model.onnx"  # no second export
    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), "--backend", "onnx"]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    if tensorrt_unavailable_reason() is not None:
        assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--backend", "tensorrt"]) == 2
        assert "export with --backend onnx" in capsys.readouterr().err
