"""``brainstream display``: the live display (signal, decoded images, latency, accuracy) from the bus."""

from __future__ import annotations

import argparse
import json
import os
import sys

from brainstream.cli import UserFacingError
from brainstream.cli._output import _finite, add_json_flag, print_json
from brainstream.realtime.display.app import has_screen

HELP = "show the live display: signal traces, retrieved / generated images, latency and accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bus",
        default=None,
        metavar="ENDPOINT",
        help="bus to subscribe to (default: the broker's tcp://127.0.0.1:5702)",
    )
    parser.add_argument(
        "--publish",
        default=None,
        metavar="ENDPOINT",
        help="where status.display goes (default: the broker's tcp://127.0.0.1:5701; 'none': nowhere)",
    )
    parser.add_argument(
        "--keys", default=None, metavar="DIR", help="CURVE keys folder when the bus runs on another host"
    )
    parser.add_argument("--screenshot", default=None, metavar="PATH", help="write a PNG of the window")
    parser.add_argument(
        "--after", type=float, default=5.0, metavar="S", help="seconds before the screenshot (5)"
    )
    parser.add_argument("--fullscreen", action="store_true", help="open full screen")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        metavar="S",
        help="close after S seconds (default: when closed, or right after --screenshot)",
    )
    parser.add_argument("--channels-per-page", type=int, default=16, metavar="N", help="traces per page (16)")
    parser.add_argument(
        "--latency-window", type=float, default=10.0, metavar="S", help="latency stats window (10 s)"
    )
    parser.add_argument(
        "--gallery",
        default=None,
        metavar="DIR",
        help="gallery folder (shows the true image when not retrieved)",
    )
    parser.add_argument(
        "--clock-offsets",
        action="store_true",
        help="read other hosts' stamps through their LSL clock offsets (a session split across machines; "
        "brainstream live sets it)",
    )
    parser.add_argument(
        "--summary", default=None, metavar="PATH", help="write the session summary as JSON here"
    )
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    if args.seconds is not None and args.seconds <= 0:
        raise UserFacingError(f"--seconds must be > 0, got {args.seconds}")
    if args.after < 0:
        raise UserFacingError(f"--after must be >= 0 seconds, got {args.after}")
    if args.channels_per_page < 1:
        raise UserFacingError(f"--channels-per-page must be >= 1, got {args.channels_per_page}")
    if args.gallery is not None and not os.path.isdir(args.gallery):
        raise UserFacingError(f"--gallery {args.gallery} is not a folder; pass a gallery folder")
    if not has_screen():
        raise UserFacingError(
            "no screen found (neither DISPLAY nor WAYLAND_DISPLAY is set); run with "
            "QT_QPA_PLATFORM=offscreen and --screenshot PATH to render without one"
        )
    from brainstream.realtime.display.app import run_display

    publish = "" if (args.publish or "").lower() == "none" else args.publish
    try:
        summary = run_display(
            args.bus,
            publish_endpoint=publish,
            seconds=args.seconds,
            screenshot=args.screenshot,
            after=args.after,
            fullscreen=args.fullscreen,
            page_size=args.channels_per_page,
            latency_window_s=args.latency_window,
            gallery_dir=args.gallery,
            keys=args.keys,
            clock_offsets=args.clock_offsets,
        )
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as fh:
            json.dump(_finite(summary), fh, indent=1)
    records = summary.pop("draw_records", [])
    s2d = summary["sample_to_display"]
    print(
        "sample→display (drawn): "
        + ", ".join(
            f"{k} p50 {v['p50_ms']:.1f} ms p99 {v['p99_ms']:.1f} ms (n={v['n']})" for k, v in s2d.items()
        )
        + (f"; screenshot {summary['screenshot']}" if summary.get("screenshot") else ""),
        file=sys.stderr,
    )
    if args.json:
        summary["n_draw_records"] = len(records)
        print_json(summary)
    return 0 if not summary.get("screenshot_error") else 1
