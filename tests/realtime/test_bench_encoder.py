"""``brainstream bench encoder`` writes the JSON the issue specifies (structure, consistency; not speed)."""

from __future__ import annotations

import json

import pytest

from brainstream.cli import main
from brainstream.models.encoders import build_encoder
from brainstream.realtime.benchmarks.encoder import arch_for, count_gflop
from tests.cpu import BF16_MISSING


def test_bench_encoder_json(capsys):
    assert main(["bench", "encoder", "--models", "demo", "--iters", "5", "--max-seconds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["peak_gflops"] > 0
    demo = out["models"]["demo"]
    assert set(demo) >= {"gflop", "floor_ms", "torch", "onnxruntime"}
    assert demo["floor_ms"] == pytest.approx(demo["gflop"] / out["peak_gflops"] * 1e3)
    for backend in ("torch", "onnxruntime"):
        assert 0 < demo[backend]["p50_ms"] <= demo[backend]["p99_ms"]


def test_flop_count_of_a_conv_is_exact():
    # the brain module's FLOPs are dominated by its convolutions: check the counter on the full-size model's
    # known parts rather than trusting it blindly
    arch = arch_for("brain_module")
    model = build_encoder(arch).eval()
    gflop = count_gflop(model, arch["n_channels"], arch["n_times"])
    c, h, t, depth, n_in = 270, 320, arch["n_times"], 5, arch["n_channels"]
    convs = 2 * t * 3 * (c * h + h * h + (depth - 1) * 2 * h * h) + 2 * t * 3 * h * 2 * h * depth
    pointwise = 2 * t * (c * n_in + 2 * c * c + h * 2048)  # spatial mix, 1x1 conv, subject layer, final 1x1
    expected = (convs + pointwise) / 1e9
    # the rest (heads, aggregation) is tiny; the position-dependent spatial weights are not per-window work
    assert expected < gflop < expected * 1.01


def test_bench_encoder_offline_json(capsys):
    """The offline rows (fp32 ONNX Runtime and torch bf16) on a short recording: structure and accuracy."""
    args = ["bench", "encoder", "--models", "demo", "--iters", "3", "--max-seconds", "1", "--offline",
            "--offline-seconds", "8", "--sliding-seconds", "4", "--json"]  # fmt: skip
    assert main(args) == 0
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["offline"]["event"]
    assert event["windows"] >= 3
    assert event["encode_floor_s"] > 0 and event["x_realtime"] > 0
    bf16 = event["bf16"]
    if BF16_MISSING is not None:  # emulated bf16 is slower than fp32: not timed, and the row says why
        assert bf16 == {"skipped": BF16_MISSING}
        return
    assert bf16["peak_gflops"] > 0 and bf16["encode_floor_s"] > 0
    # against fp32 on the same windows: directions (what retrieval compares) kept, elements close
    assert bf16["min_cosine"] >= 0.995 and 0 < bf16["max_rel_err"] <= 0.2
