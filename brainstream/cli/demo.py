"""``brainstream demo``: the embedded default, the whole system on one machine with nothing to download.

A virtual subject streams CTF-275 MEG over real LSL on loopback (self-paced RSVP of demo images its encoder
never saw in training); the decoder runs the demo encoder on ONNX Runtime; retrieval searches the demo
gallery; the demo generator (trained on the gallery minus the test images) draws images; the display shows
it all (offscreen screenshots without a screen); the recorder writes the session to XDF and keeps the
reconstructions. At the end: a summary of drops, latencies, retrieval (among the test images and over the
whole gallery) and the reconstructions' 2-way identification.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

from brainstream.cli._output import add_json_flag, print_json

HELP = "run the embedded demo: virtual subject → decoder → retrieval / generator → display (CPU is enough)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from brainstream.realtime.session.demo_session import DEMO_CONFIG

    parser.add_argument("--seconds", type=float, default=60.0, help="how long to stream (default 60)")
    parser.add_argument("--headless", action="store_true", help="no window: offscreen screenshots only")
    parser.add_argument("--run-dir", default=None, help="output folder (default runs/demo-<time>)")
    parser.add_argument("--config", default=DEMO_CONFIG, help="pipeline config (default: the demo's)")
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="continuous reconstruction: sliding causal windows every 100 ms instead of windows locked to "
        "stimulus onsets, each decoded, retrieved and generated (newest-only): the demo_meg_continuous "
        "config",
    )
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from brainstream.realtime.session.demo_session import CONTINUOUS_CONFIG, run_demo_session

    headless = args.headless or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    run_dir = Path(args.run_dir or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    config = CONTINUOUS_CONFIG if args.continuous else args.config
    summary = run_demo_session(args.seconds, run_dir, headless=headless, quiet=args.json, config=config)
    if args.json:
        print_json({k: v for k, v in summary.items() if k != "exit_codes"})
    else:
        print_summary(summary)
    return 0


def print_summary(s: dict) -> None:
    lat = s["latency_ms"]
    r = s["retrieval"]

    def fmt(d: dict) -> str:
        p50, p99 = d.get("p50"), d.get("p99")
        return "n/a" if p50 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"

    print(
        f"windows decoded: {s['windows']}   dropped samples: {s['dropped_samples']}   "
        f"dropped messages: {s['dropped_messages']}"
    )
    print(f"push → embedding:  {fmt(lat['push_to_embedding'])}")
    print(f"sample → display:  {fmt(lat['sample_to_display'])}")
    print(f"sample → image:    {fmt(lat['sample_to_image'])}")
    t = s.get("retrieval_test_images") or {}
    if t.get("top5") is not None:
        print(
            f"retrieval among the {t['n_way']} test images ({t['n_way']}-way, as papers report it), "
            f"{t['trials']} trials: top-1 {t['top1']:.1%} (chance {t['chance_top1']:.1%}), "
            f"top-5 {t['top5']:.1%} (chance {t['chance_top5']:.1%})"
        )
    if r["top5"] is not None:
        print(
            f"retrieval over the whole gallery ({r['n_gallery']} images), {r['trials']} trials: top-1 "
            f"{r['top1']:.1%}, top-5 {r['top5']:.1%} (chance {r['chance_top5']:.1%})"
        )
    ident = (s.get("reconstruction") or {}).get("two_way_identification") or {}
    if ident.get("mean") is not None:
        print(
            f"reconstructions: 2-way identification among the test images {ident['mean']:.1%} "
            f"[95 % CI {ident['ci_low']:.1%}, {ident['ci_high']:.1%}] (chance 50 %), n = {ident['n']}; "
            f"kept in {s['reconstruction']['kept']}"
        )
    print("CPU per process (% of a core): " + ", ".join(f"{k} {v:g}" for k, v in s["cpu_percent"].items()))
    print("screenshots: " + ", ".join(s["screenshots"]) if s["screenshots"] else "no screenshot was written")
    print(f"recording: {s['recording']}")
