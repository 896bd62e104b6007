"""``brainstream bench encoder``: batch-1 encoder latency per backend, against the FLOP floor of this machine.

For each model the floating-point operations of one window are counted with
``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add, matmuls and convolutions; input-independent
work excluded). The floor is those FLOPs divided by the fp32 matrix-multiply rate measured in the same run
with the same thread count (the best of several timed 1024² / 2048² products, since contention only ever
slows a run down). Torch eager is the baseline; ONNX Runtime (and, when asked, torch.compile / TensorRT) run
the same weights, which are random (latency does not depend on them). ``x_floor_paired`` divides each run by
the floor implied by a matmul timed just before it: robust to colleagues' load on a shared machine.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HELP = "encoder latency (torch eager vs ONNX Runtime [vs compile/TensorRT]) against the FLOP floor"

logger = logging.getLogger(__name__)

# The THINGS-MEG brain module (272 ch × 1.5 s at 120 Hz), the demo encoder on the same input, ATM-S for EEG
MODELS: dict[str, dict[str, Any]] = {
    "brain_module": {"name": "brain_module", "n_channels": 272, "n_times": 180, "dim": 768},
    "demo": {"n_channels": 272, "n_times": 180, "dim": 512},  # + models.encoders.DEMO_BRAIN_MODULE
    "atm": {"name": "atm_s", "n_channels": 63, "n_times": 250, "dim": 1024},
}
BACKENDS = ("torch", "onnxruntime", "compile", "tensorrt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=BACKENDS,
        default=["torch", "onnxruntime"],
        help="backends to time (default: torch onnxruntime; torch is always timed as the baseline)",
    )
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to time"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: usable cores, ≤ 4)")
    parser.add_argument("--iters", type=int, default=100, help="timed runs per backend (default 100)")
    parser.add_argument(
        "--max-seconds", type=float, default=15.0, help="cap on timing per backend (default 15)"
    )
    parser.add_argument("--device", default=None, help="torch/compile device (default: cuda if available)")


def arch_for(name: str) -> dict[str, Any]:
    """Architecture dict of a benchmark model."""
    if name == "demo":
        from models.encoders import DEMO_BRAIN_MODULE

        return {**DEMO_BRAIN_MODULE, **MODELS["demo"]}
    return dict(MODELS[name])


def count_gflop(model: Any, n_channels: int, n_times: int) -> float:
    """GFLOP per window (2 per multiply-add) of a forward pass.

    Work that does not depend on the input (e.g. the brain module's spatial-attention weights computed from
    sensor positions, which an ONNX export folds into constants) is excluded: FLOPs(batch 2) − FLOPs(batch 1).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    totals = []
    for batch in (1, 2):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, n_channels, n_times))
        totals.append(counter.get_total_flops())
    return (totals[1] - totals[0]) / 1e9


def measure_peak_gflops(repeats: int = 7) -> float:
    """Best fp32 matmul rate (GFLOP/s) over square products of two sizes, current torch thread count."""
    import torch

    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _matmul_rate() -> float:
    """One timed 1024² fp32 product: the machine's matmul rate (GFLOP/s) right now."""
    import torch

    a, b = _PROBE
    t0 = time.perf_counter()
    torch.matmul(a, b)
    return 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


_PROBE: tuple = ()


def time_runtime(
    runtime: Any, x: np.ndarray, iters: int, max_seconds: float, gflop: float
) -> dict[str, float]:
    """p50 / p99 / min latency of ``runtime.run(x)`` in ms (after a warm-up).

    ``x_floor_paired`` is the median over runs of latency ÷ (FLOPs ÷ matmul rate measured just before that
    run): on a shared machine it compares each run with the CPU share it actually had.
    """
    global _PROBE
    import torch

    _PROBE = (torch.randn(1024, 1024), torch.randn(1024, 1024))
    runtime.warmup(3)
    times: list[float] = []
    ratios: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < iters and (len(times) < 10 or time.perf_counter() < deadline):
        rate = _matmul_rate()
        t0 = time.perf_counter()
        runtime.run(x)
        dt = time.perf_counter() - t0
        times.append(dt)
        ratios.append(dt / (gflop / rate))
    ms = np.asarray(times) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "n": int(ms.size),
        "x_floor_paired": float(np.median(ratios)),
    }


def _make_runtime(backend: str, model: Any, device: str, threads: int, workdir: Path) -> Any:
    if backend == "torch":
        from models.runtime.torch_runtime import TorchRuntime

        return TorchRuntime(model, device=device)
    if backend == "onnxruntime":
        from models.runtime.onnx_runtime import OnnxRuntime, export_onnx

        return OnnxRuntime(export_onnx(model, workdir / f"{id(model)}.onnx"), intra_op_threads=threads)
    if backend == "compile":
        from models.runtime.compile_runtime import CompileRuntime

        return CompileRuntime(model, device=device)
    from models.runtime.tensorrt_runtime import TensorRTRuntime, build_engine

    return TensorRTRuntime(build_engine(model, workdir / f"{id(model)}.ep", max_batch=1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from models.encoders import build_encoder
    from models.runtime.onnx_runtime import default_threads
    from models.runtime.tensorrt_runtime import tensorrt_unavailable_reason

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backends = ["torch", *[b for b in args.backend if b != "torch"]]
    if "tensorrt" in backends and (reason := tensorrt_unavailable_reason()):
        logger.warning("skipping tensorrt: %s", reason)
        backends.remove("tensorrt")
    torch.manual_seed(0)
    peak = measure_peak_gflops()
    result: dict[str, Any] = {
        "peak_gflops": peak,
        "threads": threads,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "models": {},
    }
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s on {threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as tmp:
        for name in args.models:
            arch = arch_for(name)
            model = build_encoder(arch).eval()
            gflop = count_gflop(model, arch["n_channels"], arch["n_times"])
            entry: dict[str, Any] = {
                "gflop": gflop,
                "floor_ms": gflop / peak * 1e3,
                "input": [arch["n_channels"], arch["n_times"]],
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            }
            x = np.random.default_rng(0).standard_normal((1, arch["n_channels"], arch["n_times"]), np.float32)
            for backend in backends:
                rt = _make_runtime(backend, model, device, threads, Path(tmp))
                entry[backend] = time_runtime(rt, x, args.iters, args.max_seconds, gflop)
                entry[backend]["x_floor"] = entry[backend]["p50_ms"] / entry["floor_ms"]
                rt.close()
            result["models"][name] = entry
            _print_row(name, entry, backends)
    return result


def _print_row(name: str, entry: dict[str, Any], backends: list[str]) -> None:
    print(
        f"\n{name}: {entry['gflop']:.3f} GFLOP/window, floor {entry['floor_ms']:.2f} ms, "
        f"{entry['params_m']:.2f} M params"
    )
    print(f"  {'backend':<12} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9} {'p50/floor':>10} {'paired':>8}")
    for b in backends:
        e = entry[b]
        print(
            f"  {b:<12} {e['p50_ms']:9.2f} {e['p99_ms']:9.2f} {e['min_ms']:9.2f} {e['x_floor']:10.2f} "
            f"{e['x_floor_paired']:8.2f}"
        )
