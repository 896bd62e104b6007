"""``brainstream bench decode`` JSON as the issue asks (real LSL, real bus; structure, not speed)."""

from __future__ import annotations

import json

from brainstream.cli import main
from tests.cpu import needs_native_bf16


@needs_native_bf16  # without bf16 units both rows are refused: tests/realtime/test_cpu_without_bf16.py
def test_bench_decode_json_with_a_reduced_precision_incremental_row(capsys):
    args = ["bench", "decode", "--seconds", "4", "--models", "demo", "full_incremental", "--runtime", "torch",
            "--precision", "bf16", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stream"]["channels"] == 272 and out["stride_s"] == 0.05
    for row in ("demo", "full_incremental"):
        r = out[row]
        assert r["windows"] > 0 and r["precision"] == "bf16"
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["encoder_p50_ms"] <= r["encoder_p99_ms"]
        assert r["dropped_samples"] == 0
    assert out["full_incremental"]["runtime"] == "incremental (torch)"
