"""``brainstream bench latency``: the demo graph headless; per-stage and end-to-end latency distributions
(p50/p95/p99/max, from each message's trace in LSL time) and CPU use per process."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

HELP = "per-stage and end-to-end latency of the whole demo graph, headless, with CPU use per process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="streaming time (default 60)")
    parser.add_argument("--run-dir", default=None, help="keep the session outputs here")


def run(args: argparse.Namespace) -> dict:
    from realtime.session.demo_session import run_demo_session

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        s = run_demo_session(args.seconds, Path(args.run_dir or tmp), headless=True, quiet=True)
    lat = s["latency_ms"]
    result = {
        "seconds": s["seconds"],
        "windows": s["windows"],
        "dropped_samples": s["dropped_samples"],
        "dropped_messages": s["dropped_messages"],
        "stages": lat["stages"],
        "end_to_end": {
            "push_to_embedding": lat["push_to_embedding"],
            "sample_to_display": lat["sample_to_display"],
            "sample_to_image": lat["sample_to_image"],
        },
        "cpu_percent": s["cpu_percent"],
    }
    print(
        f"{'stage':28s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}  (ms after the window's last sample)"
    )
    for name, d in sorted(lat["stages"].items(), key=lambda kv: kv[1]["p50"] or 0):
        print(
            f"{name:28s} "
            + " ".join(
                f"{d[q]:8.1f}" if d[q] is not None else f"{'n/a':>8s}" for q in ("p50", "p95", "p99", "max")
            )
        )
    print("CPU (% of one core): " + ", ".join(f"{k} {v:g}" for k, v in s["cpu_percent"].items()))
    return result
