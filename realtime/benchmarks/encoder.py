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
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="also time sliding windows of the full brain module: full recomputation vs the incremental path",
    )
    parser.add_argument("--stride-ms", type=float, default=50.0, help="sliding stride for --incremental (50)")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="also time offline throughput: a THINGS-like recording through preprocess + windows + encoder",
    )
    parser.add_argument("--offline-seconds", type=float, default=60.0, help="recording length for --offline")
    parser.add_argument(
        "--sliding-seconds", type=float, default=10.0, help="part of it encoded with sliding windows (10)"
    )


def arch_for(name: str) -> dict[str, Any]:
    """Architecture dict of a benchmark model."""
    if name == "demo":
        from brainstream.models.encoders import DEMO_BRAIN_MODULE

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


class MatmulProbe:
    """Times one square product on a device: the matmul rate (GFLOP/s) available right now (fp32 default)."""

    def __init__(self, device: str = "cpu", n: int = 1024, dtype: str = "fp32") -> None:
        import torch

        self.torch, self.device, self.n = torch, torch.device(device), n
        kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        self.a = torch.randn(n, n, device=self.device).to(kind)
        self.b = torch.randn(n, n, device=self.device).to(kind)
        self.rate()  # first call allocates / initialises the BLAS

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def rate(self) -> float:
        self._sync()
        t0 = time.perf_counter()
        self.torch.matmul(self.a, self.b)
        self._sync()
        return 2 * self.n**3 / (time.perf_counter() - t0) / 1e9


def measure_peak_gflops(device: str = "cpu", repeats: int = 7, dtype: str = "fp32") -> float:
    """Best matmul rate (GFLOP/s) over 1024² and 2048² products, current torch thread count."""
    return max(MatmulProbe(device, n, dtype).rate() for n in (1024, 2048) for _ in range(repeats))


PROBE_PAUSE_S = 0.02
RUNS_PER_PROBE = 5


def time_runtime(
    runtime: Any,
    x: np.ndarray,
    iters: int,
    max_seconds: float,
    gflop: float,
    probe: MatmulProbe | None = None,
) -> dict[str, float]:
    """p50 / p99 / min latency of ``runtime.run(x)`` in ms (after a warm-up).

    ``x_floor_paired`` is the median over runs of latency ÷ (FLOPs ÷ matmul rate measured just before that
    run's block of runs): on a shared machine it compares each run with the share of the processor it
    actually had. The probe is not run right before each timed call: torch's OpenMP workers keep spinning
    for a while after a product and evict the caches, which cost the next ONNX Runtime call 3-4 ms (of 15)
    on 2 cores; a pause after each probe lets them park.
    """
    probe = probe or MatmulProbe("cpu")
    runtime.warmup(3)
    times: list[float] = []
    ratios: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < iters and (len(times) < 10 or time.perf_counter() < deadline):
        rate = probe.rate()
        time.sleep(PROBE_PAUSE_S)
        runtime.run(x)  # the pause's first call refills the caches: not timed
        for _ in range(min(RUNS_PER_PROBE, iters - len(times))):
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
        from brainstream.models.runtime.torch_runtime import TorchRuntime

        return TorchRuntime(model, device=device)
    if backend == "onnxruntime":
        from brainstream.models.runtime.onnx_runtime import OnnxRuntime, export_onnx

        return OnnxRuntime(export_onnx(model, workdir / f"{id(model)}.onnx"), intra_op_threads=threads)
    if backend == "compile":
        from brainstream.models.runtime.compile_runtime import CompileRuntime

        return CompileRuntime(model, device=device)
    from brainstream.models.runtime.tensorrt_runtime import TensorRTRuntime, build_engine

    return TensorRTRuntime(build_engine(model, workdir / f"{id(model)}.ep", max_batch=1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from brainstream.models.encoders import build_encoder
    from brainstream.models.runtime.onnx_runtime import default_threads
    from brainstream.models.runtime.tensorrt_runtime import tensorrt_unavailable_reason

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backends = ["torch", *[b for b in args.backend if b != "torch"]]
    if "tensorrt" in backends and (reason := tensorrt_unavailable_reason()):
        logger.warning("skipping tensorrt: %s", reason)
        backends.remove("tensorrt")
    torch.manual_seed(0)
    # the floor is taken on the device the torch backends run on; CPU-only backends are also compared with
    # the CPU's own rate when that device is a GPU
    peak = measure_peak_gflops(device)
    cpu_peak = peak if device == "cpu" else measure_peak_gflops("cpu")
    probes = {"cpu": MatmulProbe("cpu"), device: MatmulProbe(device)}
    result: dict[str, Any] = {
        "peak_gflops": peak,
        "threads": threads,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "models": {},
    }
    if device != "cpu":
        result["cpu_peak_gflops"] = cpu_peak
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s on {result['device']} ({threads} CPU thread(s))")
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
                on_cpu = backend == "onnxruntime" and "CUDA" not in rt.describe().get("provider", "")
                probe, ref = (probes["cpu"], cpu_peak) if on_cpu else (probes[device], peak)
                entry[backend] = time_runtime(rt, x, args.iters, args.max_seconds, gflop, probe)
                entry[backend]["x_floor"] = entry[backend]["p50_ms"] / (gflop / ref * 1e3)
                rt.close()
            result["models"][name] = entry
            _print_row(name, entry, backends)
        if args.incremental:
            result["incremental"] = bench_incremental(args, peak, threads, Path(tmp))
        if args.offline:
            result["offline"] = bench_offline(args, peak, threads, Path(tmp))
    return result


def bench_offline(args: argparse.Namespace, peak: float, threads: int, workdir: Path) -> dict[str, Any]:
    """Offline throughput with the full-size brain module: the same preprocess → windows → encode code the
    loaders and the live node use, batched, over a synthetic CTF-275 recording with a THINGS-like design."""
    from brainstream.models.encoders import build_encoder
    from brainstream.models.incremental import CausalBrainModule, IncrementalEncoder
    from brainstream.models.preprocessing import PreprocessingConfig, RobustScaler, preprocess_recording
    from brainstream.models.runtime.onnx_runtime import OnnxRuntime, export_onnx
    from brainstream.models.windowing import WindowSpec, cut_epochs, sliding_window_ends

    arch = arch_for("brain_module")
    n_ch, sf_in, seconds = arch["n_channels"], 1200.0, float(args.offline_seconds)
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((n_ch, int(seconds * sf_in))) * 1e-12).astype(np.float32)
    ts = 1000.0 + np.arange(data.shape[1]) / sf_in
    # image 0.5 s + ISI 1.0 ± 0.2 s, as in THINGS-MEG
    onsets = ts[0] + 1.0 + np.cumsum(rng.uniform(1.3, 1.7, int(seconds / 1.3)))
    onsets = onsets[onsets < ts[-1] - 1.0]
    cfg = PreprocessingConfig()  # 0.1-40 Hz, 120 Hz, robust scaling, clamp 20, baseline (None, 0)
    names = [f"MEG{i:03d}" for i in range(n_ch)]
    scaler = RobustScaler(np.zeros(n_ch), np.full(n_ch, 1e-12), names)
    spec = WindowSpec(-0.5, 1.0, cfg.sfreq_out)
    model = build_encoder(arch).eval()
    gflop = count_gflop(model, n_ch, spec.n_times)
    runtime = OnnxRuntime(export_onnx(model, workdir / "offline.onnx"), intra_op_threads=threads)

    t0 = time.perf_counter()
    out, out_ts = preprocess_recording(data, ts, names, sf_in, cfg, scaler, n_jobs=threads)
    t1 = time.perf_counter()
    epochs = cut_epochs(out, out_ts, onsets, spec, cfg.baseline)
    t2 = time.perf_counter()
    fp32 = [runtime.run(epochs.X[i : i + 64]) for i in range(0, len(epochs.X), 64)]
    t3 = time.perf_counter()
    event = {
        "recording_s": seconds,
        "windows": int(len(epochs.X)),
        "preprocess_s": t1 - t0,
        "window_s": t2 - t1,
        "encode_s": t3 - t2,
        "encode_floor_s": len(epochs.X) * gflop / peak,
        "x_realtime": seconds / (t3 - t0),
    }
    event["bf16"] = _offline_bf16(model, epochs.X, np.concatenate(fp32), gflop, seconds, t2 - t0)

    # sliding windows over the first --sliding-seconds, full recomputation (batched) vs incremental
    covered = min(float(args.sliding_seconds), seconds)
    stride = max(1, int(round(args.stride_ms * 1e-3 * cfg.sfreq_out)))
    n_cov = int(covered * cfg.sfreq_out)
    ends = sliding_window_ends(0, n_cov, spec.n_times, stride)
    pre_share = (t1 - t0) * covered / seconds
    t4 = time.perf_counter()
    for i in range(0, ends.size, 32):
        batch = np.stack([out[:, e + 1 - spec.n_times : e + 1] for e in ends[i : i + 32]])
        runtime.run(batch)
    full_s = time.perf_counter() - t4
    causal = CausalBrainModule(model).eval()
    inc = IncrementalEncoder(causal, subject=0, backend="onnxruntime", threads=threads)
    start = spec.n_times + causal.context
    inc_ends = sliding_window_ends(start - 1, n_cov, start, stride)
    if inc_ends.size < 2:
        raise ValueError(
            f"--sliding-seconds {covered:g} is shorter than one causal window ({start / cfg.sfreq_out:.2f} s "
            "with its context) plus a stride: pass a longer span (default 10)"
        )
    t5 = time.perf_counter()
    inc.push(out[:, : inc_ends[0] + 1])
    for a, b in zip(inc_ends[:-1], inc_ends[1:], strict=True):
        inc.push(out[:, a + 1 : b + 1])
        inc.embedding()
    inc_s = time.perf_counter() - t5
    sliding = {
        "covered_s": covered,
        "stride_samples": stride,
        "windows": int(ends.size),
        "full_encode_s": full_s,
        "full_floor_s": ends.size * gflop / peak,
        "full_x_floor": full_s / (ends.size * gflop / peak),
        "full_x_realtime": covered / (full_s + pre_share),
        "incremental_windows": int(inc_ends.size),
        "incremental_encode_s": inc_s,
        "incremental_x_realtime": covered / (inc_s + pre_share),
    }
    bf = event["bf16"]
    bf16_line = (
        f"encode {bf['encode_s']:.2f} s (bf16 floor {bf['encode_floor_s']:.2f} s at {bf['peak_gflops']:.0f} "
        f"GFLOP/s) -> {bf['x_realtime']:.0f}x real time; against fp32: cosine >= {bf['min_cosine']:.5f}, "
        f"max relative error {bf['max_rel_err']:.1e}"
        if "skipped" not in bf
        else f"skipped: {bf['skipped']}"
    )
    print(
        f"\noffline, {seconds:.0f} s CTF-275 recording at 1200 Hz, full-size brain module (ONNX Runtime):"
        f"\n  event-locked: {event['windows']} windows, preprocess {event['preprocess_s']:.2f} s, "
        f"encode {event['encode_s']:.2f} s (floor {event['encode_floor_s']:.2f} s) -> "
        f"{event['x_realtime']:.0f}x real time"
        f"\n  event-locked, torch bf16: {bf16_line}"
        f"\n  sliding ({stride} samples): full recompute {sliding['full_x_realtime']:.2f}x real time "
        f"({sliding['full_x_floor']:.2f}x its FLOP floor); "
        f"incremental {sliding['incremental_x_realtime']:.2f}x"
    )
    return {"event": event, "sliding": sliding}


def _offline_bf16(
    model: Any, X: np.ndarray, ref: np.ndarray, gflop: float, seconds: float, before_s: float
) -> dict[str, Any]:
    """The same event-locked windows encoded by torch in bfloat16 (the bf16 floor from a bf16 matmul),
    compared with ``ref``, their fp32 embeddings; ``{"skipped": reason}`` on a CPU without native bf16
    (emulated bf16 is slower than fp32: there is nothing to measure, and its matmul probe takes minutes)."""
    import torch

    from brainstream.models.runtime.precision import cpu_bf16_missing_reason
    from brainstream.models.runtime.torch_runtime import TorchRuntime

    if reason := cpu_bf16_missing_reason():
        logger.warning("skipping the offline bf16 row: %s", reason)
        return {"skipped": reason}

    runtime = TorchRuntime(model, precision="bf16")
    runtime.run(X[:2])  # oneDNN picks and caches its bf16 kernels on the first call
    peak = measure_peak_gflops("cpu", dtype="bf16")
    t0 = time.perf_counter()
    out = np.concatenate([runtime.run(X[i : i + 64]) for i in range(0, len(X), 64)])
    encode_s = time.perf_counter() - t0
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    return {
        "peak_gflops": peak,
        # native bf16 units (AVX512-BF16 / AMX); without them bf16 is emulated and slower than fp32
        "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "encode_s": encode_s,
        "encode_floor_s": len(X) * gflop / peak,
        "x_realtime": seconds / (before_s + encode_s),
        "max_rel_err": float(np.max(np.abs(out - ref)) / np.max(np.abs(ref))),
        # retrieval compares embeddings by cosine: the figure that says whether bf16 changes a decoding
        "min_cosine": float(np.min(np.sum(out * ref, 1) / norms)),
    }


def bench_incremental(args: argparse.Namespace, peak: float, threads: int, workdir: Path) -> dict[str, Any]:
    """Sliding windows of the causal full-size brain module: recompute the window vs update incrementally."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from brainstream.models.encoders import build_encoder
    from brainstream.models.incremental import CausalBrainModule, IncrementalEncoder
    from brainstream.models.runtime.onnx_runtime import OnnxRuntime, export_onnx
    from brainstream.models.runtime.precision import precision_unavailable_reason

    arch = arch_for("brain_module")
    sfreq = 120.0  # the THINGS-MEG model rate
    stride = max(1, int(round(args.stride_ms * 1e-3 * sfreq)))
    causal = CausalBrainModule(build_encoder(arch).eval()).eval()
    window = causal.config.n_times
    full_gflop = count_gflop(causal, arch["n_channels"], window)
    full = OnnxRuntime(export_onnx(causal, workdir / "causal.onnx"), intra_op_threads=threads)
    x = np.random.default_rng(0).standard_normal((arch["n_channels"], window + 400 * stride), np.float32)
    out: dict[str, Any] = {
        "stride_samples": stride,
        "window_samples": window,
        "context_samples": causal.context,
        "full_gflop": full_gflop,
        "full_floor_ms": full_gflop / peak * 1e3,
        "full_onnxruntime": time_runtime(full, x[None, :, :window], args.iters, args.max_seconds, full_gflop),
    }
    counting = IncrementalEncoder(causal, subject=0, backend="torch")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        counting.push(x[:, :stride])
    out["step_gflop"] = counter.get_total_flops() / 1e9
    out["step_floor_ms"] = out["step_gflop"] / peak * 1e3
    # bf16 halves the weight bytes a memory-bound step reads (torch only)
    for name, backend, precision in (
        ("onnxruntime", "onnxruntime", "fp32"), ("torch", "torch", "fp32"), ("torch_bf16", "torch", "bf16")
    ):  # fmt: skip
        if reason := precision_unavailable_reason(precision, "cpu"):
            logger.warning("skipping the incremental %s row: %s", name, reason)
            out[f"incremental_{name}"] = {"skipped": reason}
            continue
        inc = IncrementalEncoder(causal, subject=0, backend=backend, threads=threads, precision=precision)
        out[f"incremental_{name}"] = time_runtime(
            _StrideFeeder(inc, x, stride), x, args.iters, args.max_seconds, out["step_gflop"]
        )
    speedup = out["full_onnxruntime"]["p50_ms"] / out["incremental_onnxruntime"]["p50_ms"]
    out["speedup_p50"] = speedup
    full_p50, inc_p50 = out["full_onnxruntime"]["p50_ms"], out["incremental_onnxruntime"]["p50_ms"]
    torch_rows = ", ".join(
        f"{label} " + (f"p50 {r['p50_ms']:.2f} ms" if "skipped" not in r else f"skipped ({r['skipped']})")
        for label, r in (("torch", out["incremental_torch"]), ("torch bf16", out["incremental_torch_bf16"]))
    )
    print(
        f"\nsliding brain module (causal, {window} samples incl. {causal.context} context, stride {stride}):"
        f"\n  full recompute  {full_gflop:.3f} GFLOP  ONNX Runtime p50 {full_p50:.2f} ms"
        f"\n  incremental     {out['step_gflop']:.3f} GFLOP  ONNX Runtime p50 {inc_p50:.2f} ms, {torch_rows}"
        f"\n  speed-up (p50)  {speedup:.1f}x"
    )
    return out


class _StrideFeeder:
    """Pushes the next ``stride`` samples into an incremental encoder per ``run`` (for time_runtime)."""

    def __init__(self, inc: Any, x: np.ndarray, stride: int) -> None:
        self.inc, self.x, self.stride = inc, x, stride
        inc.push(x[:, : inc.window])
        self.pos = inc.window

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self.run(None)

    def run(self, _x: Any) -> None:
        if self.pos + self.stride > self.x.shape[1]:
            self.pos = self.inc.window  # wrap around: the content does not matter for timing
        self.inc.push(self.x[:, self.pos : self.pos + self.stride])
        self.pos += self.stride
        self.inc.embedding()


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
