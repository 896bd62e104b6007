"""The GPU checks of this project in one prepared run (a lent GPU machine has minutes, not hours).

Stages, each in its own subprocess with its own time limit so that one slow stage cannot cost the others,
each writing its JSON as soon as it finishes:

1. ``env``: GPU, driver, torch / onnxruntime versions and providers.
2. ``encoder``: ``brainstream bench encoder`` (the same code) on the GPU: torch eager vs torch.compile
   (``reduce-overhead``: CUDA graphs) for the full-size MEG brain module, the demo encoder and ATM-S, ONNX
   Runtime beside them; goal: compiled p50 ≤ 1 ms per window.
3. ``parity``: torch.compile fp32 and fp16 against eager fp32 on the GPU (relative error; the TensorRT
   fp16 tolerance of the runtime tests, 1e-2, applies to the fp16 row).
4. ``generator``: ``scripts/gpu_generator_latency.py`` (SDXL UNet at full size, random weights; 512², 1 step).
5. ``decode``: ``brainstream bench decode`` with the compiled and the eager torch runtime on the GPU.

The machine's python3 has torch; pydantic (diffusers for stage 4; mne, pylsl, pyzmq for stage 5) travel as
wheels in ``.whl``::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 scripts/gpu_checks.py --out $OUT

Locally ``--stages env,parity --device cpu`` checks the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stage_env(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime": onnxruntime.__version__,
        "ort_providers": onnxruntime.get_available_providers(),
        "cpu_count": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, gpu_memory_gb=props.total_memory / 1e9, sm_count=props.multi_processor_count
        )
    try:
        import torch_tensorrt

        info["torch_tensorrt"] = torch_tensorrt.__version__
    except ImportError as exc:
        info["torch_tensorrt"] = f"not installed ({exc})"
    return info


def stage_encoder(args: argparse.Namespace) -> dict[str, Any]:
    from brainstream.realtime.benchmarks import encoder

    parser = argparse.ArgumentParser()
    encoder.add_arguments(parser)
    bench_args = parser.parse_args(
        [
            "--backend",
            "torch",
            "compile",
            "onnxruntime",
            "--device",
            args.device,
            "--iters",
            "300",
            "--max-seconds",
            "10",
        ]
    )
    return encoder.run(bench_args)


def stage_parity(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from brainstream.models.encoders import build_encoder
    from brainstream.models.runtime.compile_runtime import CompileRuntime
    from brainstream.realtime.benchmarks.encoder import arch_for

    out: dict[str, Any] = {}
    for name in ("brain_module", "demo", "atm"):
        torch.manual_seed(0)
        arch = arch_for(name)
        model = build_encoder(arch).eval().to(args.device)
        x = np.random.default_rng(1).standard_normal((4, arch["n_channels"], arch["n_times"]), np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x).to(args.device)).float().cpu().numpy()
        row: dict[str, Any] = {}
        for dtype in ("float32", "float16"):
            if dtype == "float16" and args.device == "cpu":
                continue
            m = build_encoder(arch).eval()
            m.load_state_dict(model.state_dict())
            m = m.to(args.device, getattr(torch, dtype))
            # the wrappers share one forward: without a reset they hit the recompile limit
            torch._dynamo.reset()
            rt = CompileRuntime(_CastInput(m, getattr(torch, dtype)), device=args.device)
            got = rt.run(x)
            err = float(np.abs(got - ref).max() / np.abs(ref).max())
            t0 = time.perf_counter()
            for _ in range(200):
                rt.run(x[:1])
            row[dtype] = {"max_rel_err": err, "mean_ms_batch1": (time.perf_counter() - t0) / 200 * 1e3}
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


class _CastInput:
    """Wraps a model so that fp32 input is cast to the model's dtype inside the compiled graph."""

    def __new__(cls, model: Any, dtype: Any) -> Any:
        import torch

        class Cast(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model
                self.config = model.config

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.model(x.to(dtype)).float()

        return Cast()


def stage_generator(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out) / "generator.json"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "gpu_generator_latency.py"),
        "--modes",
        args.gen_modes,
        "--n",
        "30",
        "--out",
        str(path),
    ]
    subprocess.run(cmd, check=False, timeout=args.gen_timeout)
    return json.loads(path.read_text()) if path.exists() else {"error": "no output"}


def stage_decode(args: argparse.Namespace) -> dict[str, Any]:
    """``brainstream bench decode`` (LSL push → embedding on the bus) with the GPU runtimes."""
    out: dict[str, Any] = {}
    for runtime in args.decode_runtimes.split(","):
        path = Path(args.out) / f"decode_{runtime}.json"
        cmd = [sys.executable, "-m", "brainstream", "bench", "decode", "--runtime", runtime, "--seconds",
               "30", "--models", *args.decode_models.split(","), "--json"]  # fmt: skip
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=args.stage_timeout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        out[runtime] = json.loads(lines[-1]) if lines else {"error": proc.stderr[-2000:]}
        path.write_text(json.dumps(out[runtime], indent=1))
        print(runtime, json.dumps(out[runtime]), flush=True)
    return out


STAGES = {
    "env": stage_env,
    "encoder": stage_encoder,
    "parity": stage_parity,
    "generator": stage_generator,
    "decode": stage_decode,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="env,encoder,parity,generator")
    parser.add_argument("--out", default=".")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--stage-timeout", type=float, default=240.0)
    parser.add_argument("--gen-modes", default="eager,cudagraphs")
    parser.add_argument("--gen-timeout", type=float, default=300.0)
    parser.add_argument("--decode-runtimes", default="compile,torch")
    parser.add_argument("--decode-models", default="demo,full")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # run one stage in this process
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.one:
        result = STAGES[args.one](args)
        (Path(args.out) / f"{args.one}.json").write_text(json.dumps(result, indent=1, default=str))
        return 0
    for stage in args.stages.split(","):
        t0 = time.perf_counter()
        limit = args.gen_timeout + 30 if stage == "generator" else args.stage_timeout
        cmd = [
            sys.executable,
            __file__,
            "--one",
            stage,
            "--out",
            args.out,
            "--device",
            args.device,
            "--gen-modes",
            args.gen_modes,
            "--gen-timeout",
            str(args.gen_timeout),
            "--decode-runtimes",
            args.decode_runtimes,
            "--decode-models",
            args.decode_models,
            "--stage-timeout",
            str(args.stage_timeout),
        ]
        try:
            rc = subprocess.run(cmd, check=False, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        print(f"== stage {stage}: rc={rc} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
