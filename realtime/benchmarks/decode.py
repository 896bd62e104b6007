"""``brainstream bench decode``: LSL push → embedding published on the bus, sliding windows.

A separate process pushes a CTF-275-sized stream (272 channels, 1200 Hz) in 10 ms chunks, stamping each
chunk's last sample with its push time; the decoder node cuts a window every 50 ms and runs the encoder with
ONNX Runtime; a subscriber on the same bus receives the embeddings. Latency = receive time − the push time
of the chunk that held the window's last sample (``sample_to_embedding_p99_ms`` also counts the wait for the
rest of that chunk, up to 10 ms). The encoder's own p99 is measured in the same run: the pipeline's overhead
is the difference.

Rows: ``demo`` (demo-size brain module), ``full`` (full-size, each window recomputed whole) and
``full_incremental`` (full-size *causal* brain module, decoded incrementally: the samples stream into the
encoder as they arrive and each window's embedding is read after its last sample; its encoder time is that of
the push holding the last sample). Weights are random: only the timing matters.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HELP = "latency from LSL push to embedding on the bus (CTF-275 at 1200 Hz, 50 ms stride, ONNX Runtime)"

N_CHANNELS, RATE, CHUNK_MS = 272, 1200.0, 10.0
MODELS = ("demo", "full", "full_incremental")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="streaming time per encoder (s)")
    parser.add_argument("--stride", type=float, default=0.05, help="sliding-window stride (s)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--runtime",
        default="onnxruntime",
        help="encoder runtime backend (full_incremental: torch or onnxruntime)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="encoder arithmetic (default: the runtime's own; bf16 / fp16 with --runtime torch)",
    )


def _checkpoint(kind: str, ch_names: list[str], folder: Path) -> Path:
    import torch

    from brainstream.models.checkpoint import CheckpointMeta, save_checkpoint
    from brainstream.models.encoders import DEMO_BRAIN_MODULE, build_encoder, input_context
    from brainstream.models.preprocessing import PreprocessingConfig

    torch.manual_seed(0)
    tmin, tmax, sfreq = -0.5, 1.0, 120.0
    n_times = int(round((tmax - tmin) * sfreq))
    pos = np.random.default_rng(0).uniform(size=(len(ch_names), 2)).tolist()
    arch = {"name": "brain_module", "n_channels": len(ch_names), "n_times": n_times, "positions": pos}
    arch.update(DEMO_BRAIN_MODULE if kind == "demo" else {"dim": 768})
    if kind == "demo":
        arch["dim"] = 128
    if kind == "full_incremental":  # the same 1.5 s of aggregated frames, plus the receptive context before
        arch["causal"] = True
        arch["n_times"] = n_times + input_context(arch)
        tmin = tmax - arch["n_times"] / sfreq
    model = build_encoder(arch).eval()
    pre = PreprocessingConfig(l_freq=0.1, h_freq=40.0, sfreq_out=sfreq, robust_scale=False, clamp=20.0)
    meta = CheckpointMeta(
        arch=arch,
        ch_names=ch_names,
        positions=pos,
        sfreq=sfreq,
        tmin=tmin,
        tmax=tmax,
        preprocessing=pre.model_dump(),
        space=f"bench:random:{arch['dim']}",
        dim=arch["dim"],
    )
    return save_checkpoint(folder / kind, model, meta)


def _run_one(kind: str, args: argparse.Namespace, folder: Path) -> dict:
    import pylsl

    from brainstream.models.runtime import load_runtime
    from brainstream.realtime.acquisition import StreamReader
    from brainstream.realtime.bus import Publisher, Subscriber
    from brainstream.realtime.decoder.node import DecoderNode, incremental_encoder

    name = f"bench-decode-{uuid.uuid4().hex[:8]}"
    ch_names = [f"CH{i:03d}" for i in range(N_CHANNELS)]
    checkpoint = _checkpoint(kind, ch_names, folder)
    runtime = incremental = None
    try:
        if kind == "full_incremental":
            incremental, meta = incremental_encoder(checkpoint, args.runtime, precision=args.precision)
        else:
            runtime, meta = load_runtime(checkpoint, args.runtime, precision=args.precision)
            runtime.warmup()  # compile / allocate before the stream starts
    except (ValueError, RuntimeError) as exc:  # a runtime or precision this machine cannot run
        return {**_empty_row(args), "skipped": str(exc)}
    endpoint = f"ipc://{folder}/bus-{kind}"
    publisher = Publisher(endpoint, name="decoder", bind=True, heartbeat_interval=None)
    subscriber = Subscriber(endpoint, topics=("embedding.",))
    pusher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "brainstream.realtime.benchmarks._pusher",
            name,
            str(N_CHANNELS),
            str(RATE),
            str(CHUNK_MS),
            str(args.seconds),
        ]
    )
    try:
        reader = StreamReader(name, timeout=10.0, processing_flags=["clocksync"])
        node = DecoderNode(
            reader,
            runtime,
            meta,
            publisher,
            subject="bench",
            mode="sliding",
            stride_s=args.stride,
            incremental=incremental,
        )
        node.start()
        chunk = int(round(RATE * CHUNK_MS / 1000))
        t_first = None
        latencies, from_sample = [], []
        deadline = time.monotonic() + args.seconds + 15
        while pusher.poll() is None and time.monotonic() < deadline:
            if t_first is None and reader.buffer.n_written:
                t_first = float(reader.buffer.read_since(0, max_samples=1).timestamps[0])
            msg = subscriber.recv(timeout=0.2)
            if msg is not None and t_first is not None:
                now = pylsl.local_clock()
                # the pusher stamps each chunk's last sample with its push time, so the window's last sample
                # left with its chunk at that chunk's last sample time
                index = int(round((msg.t_sample - t_first) * RATE))
                pushed = t_first + ((index // chunk) * chunk + chunk - 1) / RATE
                latencies.append((now - pushed) * 1e3)
                from_sample.append((now - msg.t_sample) * 1e3)
        node.stop()
        if node.error is not None:  # the loop thread died: its error, not an empty result
            raise RuntimeError(f"the decoder failed during the benchmark: {node.error!r}") from node.error
    finally:
        pusher.kill()
        subscriber.close()
        publisher.close()
    enc = node.latency.summary()
    lat = np.asarray(latencies)
    stats = node.windower.stats
    sample = np.asarray(from_sample)
    row = {
        **_empty_row(args),
        # NaN when the encoder never ran: None, as JSON has no NaN
        "encoder_p50_ms": enc["encoder_p50_ms"] if np.isfinite(enc["encoder_p50_ms"]) else None,
        "encoder_p99_ms": enc["encoder_p99_ms"] if np.isfinite(enc["encoder_p99_ms"]) else None,
        "windows": int(lat.size),
        "dropped_windows": int(stats.dropped_windows),
        "dropped_samples": int(node.dropped_samples + reader.stats.as_dict().get("missing_samples", 0)),
        "runtime": node.runtime_name,
    }
    if not lat.size:
        row["no_windows"] = (
            f"no embedding arrived in {args.seconds:g} s of streaming ({reader.buffer.n_written} samples "
            f"read, {row['dropped_windows']} windows dropped, encoder p50 {_ms(row['encoder_p50_ms'])}): "
            "the encoder is slower than the stream or needs longer than that; try a larger --seconds or "
            "another --runtime / --precision"
        )
        return row
    row.update(
        p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(lat.max()),
        sample_to_embedding_p99_ms=float(np.percentile(sample, 99)),
    )
    return row


def _empty_row(args: argparse.Namespace) -> dict:
    """A row's keys before anything was measured (None: not measured)."""
    keys = ("p50_ms", "p99_ms", "max_ms", "sample_to_embedding_p99_ms", "encoder_p50_ms", "encoder_p99_ms")
    return {
        **dict.fromkeys(keys),
        "windows": 0,
        "dropped_windows": 0,
        "dropped_samples": 0,
        "runtime": args.runtime,
        "precision": args.precision or "default",
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _report_line(kind: str, r: dict) -> str:
    """The row as one line of text; a row that could not run or decoded nothing says why."""
    if "skipped" in r:
        return f"{kind:16s} skipped: {r['skipped']}"
    if "no_windows" in r:
        return f"{kind:16s} decoded nothing: {r['no_windows']}"
    return (
        f"{kind:16s} push→embedding p50 {_ms(r['p50_ms'])}  p99 {_ms(r['p99_ms'])}  "
        f"(encoder p99 {_ms(r['encoder_p99_ms'])})  windows {r['windows']}  "
        f"dropped windows {r['dropped_windows']}  dropped samples {r['dropped_samples']}"
    )


def run(args: argparse.Namespace) -> dict:
    result = {
        "stream": {"channels": N_CHANNELS, "rate": RATE, "chunk_ms": CHUNK_MS},
        "stride_s": args.stride,
        "seconds": args.seconds,
    }
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        for kind in args.models:
            result[kind] = _run_one(kind, args, Path(tmp))
            print(_report_line(kind, result[kind]), file=sys.stderr)
    return result
