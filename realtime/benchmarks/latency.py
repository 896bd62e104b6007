"""``brainstream bench latency``: the demo graph headless; per-stage and end-to-end latency distributions
(p50/p95/p99/max, from each message's trace in LSL time) and CPU use per process."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HELP = "per-stage and end-to-end latency of the whole demo graph, headless, with CPU use per process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="streaming time (default 60)")
    parser.add_argument("--run-dir", default=None, help="keep the session outputs here")


def run(args: argparse.Namespace) -> dict:
    from brainstream.realtime.session.demo_session import run_demo_session

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        run_dir = Path(args.run_dir or tmp)
        s = run_demo_session(args.seconds, run_dir, headless=True, quiet=True)
        display = display_breakdown(run_dir / "display_summary.json")
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
        "display": display,
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
    if display.get("retrieval"):
        print("a retrieval's way onto the display, in parts (ms each):")
    for name, d in display.get("retrieval", {}).items():
        print(
            f"{'  ' + name:28s} "
            + " ".join(
                f"{d[q]:8.1f}" if d[q] is not None else f"{'n/a':>8s}" for q in ("p50", "p95", "p99", "max")
            )
        )
    print("CPU (% of one core): " + ", ".join(f"{k} {v:g}" for k, v in s["cpu_percent"].items()))
    return result


def display_breakdown(path: Path) -> dict:
    """Where a window's sample→display time goes, from the display's draw records (ms).

    Per drawn kind: ``received`` (t_sample → the display's bus thread has it), ``queued`` (→ the GUI thread
    starts drawing it) and ``drawing`` (→ painted); plus ``gui_work_ms``, how long each piece of GUI work
    took (a trace frame, a part of the numbers, a retrieval...): what a new retrieval may wait behind.
    """
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict = {}
    for kind in ("retrieval", "image"):
        rows = [r for r in summary.get("draw_records") or [] if r.get("topic") == kind]
        if not rows or "t_draw_start" not in rows[0]:
            continue
        out[kind] = {
            "received": _percentiles([(r["t_received"] - r["t_sample"]) * 1e3 for r in rows]),
            "queued": _percentiles([(r["t_draw_start"] - r["t_received"]) * 1e3 for r in rows]),
            "drawing": _percentiles([(r["t_drawn"] - r["t_draw_start"]) * 1e3 for r in rows]),
        }
    out["gui_work_ms"] = summary.get("gui_work_ms", {})
    return out


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max())}
