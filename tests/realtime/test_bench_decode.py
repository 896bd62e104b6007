"""``brainstream bench decode`` JSON as the issue asks (real LSL, real bus; structure, not speed)."""

from __future__ import annotations

import json

from brainstream.cli import main
from tests.cpu import BF16_MISSING

# bf16 where the CPU has bf16 units; elsewhere bf16 rows are refused (tests/realtime/test_cpu_without_bf16.py)
# and the rows run in the other precision the incremental torch step takes
PRECISION = "bf16" if BF16_MISSING is None else "fp32"


def test_bench_decode_json_with_a_torch_incremental_row(capsys):
    args = ["bench", "decode", "--seconds", "4", "--models", "demo", "full_incremental", "--runtime", "torch",
            "--precision", PRECISION, "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stream"]["channels"] == 272 and out["stride_s"] == 0.05
    for row in ("demo", "full_incremental"):
        r = out[row]
        assert r["windows"] > 0 and r["precision"] == PRECISION
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["encoder_p50_ms"] <= r["encoder_p99_ms"]
        assert r["dropped_samples"] == 0
    assert out["full_incremental"]["runtime"] == "incremental (torch)"
