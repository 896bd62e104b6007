"""A CPU without bf16 units, for real: subprocesses whose torch dispatches as an AVX2 CPU
(``ATEN_CPU_CAPABILITY=avx2``) refuse bf16 with what to use instead, their benchmark rows say why they did
not run, and tests that need bf16 skip with the reason. Holds on any x86 CPU, with or without bf16."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from brainstream.models.runtime.precision import bf16_missing_reason
from tests.cpu import AS_AVX2_CPU

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="ATEN_CPU_CAPABILITY=avx2 is an x86 setting"
)

REFUSALS = """
import json
import torch
from brainstream.models.encoders import build_encoder
from brainstream.models.incremental import CausalBrainModule, IncrementalEncoder
from brainstream.models.runtime.precision import cpu_bf16_missing_reason, native_bf16
from brainstream.models.runtime.torch_runtime import TorchRuntime

arch = {"name": "brain_module", "n_channels": 12, "n_times": 30, "dim": 16, "n_subjects": 2,
        "spatial_channels": 10, "fourier_freqs": 3, "hidden": 12, "depth": 3, "out_channels": 20}
model = build_encoder(arch).eval()
out = {"dispatch": torch.backends.cpu.get_cpu_capability(), "reason": cpu_bf16_missing_reason(),
       "native": native_bf16()}
for name, make in (("torch", lambda: TorchRuntime(model, precision="bf16")),
                   ("incremental", lambda: IncrementalEncoder(CausalBrainModule(model), precision="bf16"))):
    try:
        make()
        out[name] = "accepted"
    except ValueError as exc:
        out[name] = str(exc)
out["fp32"] = TorchRuntime(model).describe()["precision"]
# the offline benchmark's bf16 row: skipped before its (minutes-long, emulated) bf16 matmul probe
from brainstream.realtime.benchmarks.encoder import _offline_bf16
out["offline_bf16_row"] = _offline_bf16(model, None, None, 1.0, 1.0, 0.0)
# what pytest sees of the marker the bf16 tests carry
from tests.cpu import needs_native_bf16
out["skip"] = [bool(needs_native_bf16.args[0]), needs_native_bf16.kwargs["reason"]]
print(json.dumps(out))
"""


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=AS_AVX2_CPU, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_bf16_is_refused_with_what_to_use_instead():
    proc = _run(["-c", REFUSALS])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dispatch"] == "AVX2" and out["native"] is False
    assert "AVX2" in out["reason"]
    for runtime in ("torch", "incremental"):
        assert "cannot run here" in out[runtime] and "use 'fp32'" in out[runtime]
    assert out["fp32"] == "fp32"  # fp32 is unaffected
    assert out["offline_bf16_row"] == {"skipped": out["reason"]}
    skipped, why = out["skip"]
    assert skipped and why.startswith("needs native bf16 on the CPU") and "AVX2" in why


def test_benchmark_rows_that_cannot_run_say_why():
    decode = _run(["-m", "brainstream", "bench", "decode", "--seconds", "2", "--models", "demo",
                   "full_incremental", "--runtime", "torch", "--precision", "bf16", "--json"])  # fmt: skip
    assert decode.returncode == 0, decode.stderr
    rows = json.loads(decode.stdout.strip().splitlines()[-1])
    for row in ("demo", "full_incremental"):
        assert "cannot run here" in rows[row]["skipped"] and rows[row]["windows"] == 0
        assert rows[row]["p50_ms"] is None
        assert f"{row} " in decode.stderr and "skipped: precision 'bf16'" in decode.stderr


@pytest.mark.parametrize(
    ("caps", "dispatch", "onednn", "missing"),
    [
        ({"architecture": "x86_64", "avx512_bf16": True}, "AVX512", True, None),
        ({"architecture": "x86_64", "amx_bf16": True}, "AVX512", True, None),
        ({"architecture": "x86_64", "avx2": True}, "AVX2", True, "neither AVX512-BF16 nor AMX-BF16"),
        ({"architecture": "x86_64", "avx512_bf16": True}, "AVX2", True, "runs AVX2 kernels"),
        ({"architecture": "x86_64", "avx512_bf16": True}, "AVX512", False, "oneDNN runs no bf16"),
        ({"architecture": "aarch64", "bf16": True}, "DEFAULT", True, None),
        ({"architecture": "aarch64"}, "DEFAULT", True, "no BF16 extension"),
        ({"architecture": "riscv64"}, "DEFAULT", False, "no native bf16"),
    ],
)
def test_bf16_detection_rules(caps, dispatch, onednn, missing):
    reason = bf16_missing_reason(caps, dispatch, onednn)
    assert (reason is None) if missing is None else (missing in reason)
