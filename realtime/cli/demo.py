"""``brainstream demo``: the embedded default, the whole system on one machine with nothing to download.

A virtual subject streams CTF-275 MEG over real LSL on loopback (self-paced RSVP of the demo images it was
never trained on); the decoder runs the demo encoder on ONNX Runtime; retrieval searches the demo gallery;
the tiny generator draws images; the display shows it all (offscreen screenshots without a screen); the
recorder writes the session to XDF. At the end: a summary of drops, latencies and retrieval accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path

from realtime.cli._output import add_json_flag, print_json

HELP = "run the embedded demo: virtual subject → decoder → retrieval / generator → display (CPU is enough)"
DEMO_CONFIG = "configs/pipelines/demo_meg.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to stream (default 60)")
    parser.add_argument("--headless", action="store_true", help="no window: offscreen screenshots only")
    parser.add_argument("--run-dir", default=None, help="output folder (default runs/demo-<time>)")
    parser.add_argument("--config", default=DEMO_CONFIG, help="pipeline config (default: the demo's)")
    add_json_flag(parser)


def _has_screen() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _display_drops(summary: dict) -> int:
    dropped = summary.get("dropped") or {}
    return sum(int(dropped.get(k, 0) or 0) for k in ("bus_gaps", "bus_malformed", "invalid_payload"))


def _latency(summary: dict, key: str) -> dict:
    entry = (summary.get("sample_to_display") or {}).get(key) or {}
    return {"p50": entry.get("p50_ms"), "p99": entry.get("p99_ms"), "n": entry.get("n")}


def run(args: argparse.Namespace) -> int:
    from models.config_base import resolve_config_path
    from models.gallery import Gallery
    from realtime.pipeline_config import load_pipeline_config
    from realtime.session.collector import SessionCollector
    from realtime.session.demo_assets import DEMO_DESIGN, ensure_demo_assets
    from realtime.session.graph import SessionPlan, session_nodes
    from realtime.session.supervisor import NodeSpec, Supervisor, brainstream_argv

    headless = args.headless or not _has_screen()
    if headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    config_path = resolve_config_path(args.config, "pipelines")
    config = load_pipeline_config(config_path)
    print("preparing the demo gallery and encoder ...", flush=True)
    assets = ensure_demo_assets(progress=not args.json)
    n_gallery = len(Gallery.load(assets.gallery_dir).ids)
    run_dir = Path(args.run_dir or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    shots = run_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    screenshot = shots / "demo.png"
    subject = NodeSpec(
        "virtual-subject",
        brainstream_argv(
            "simulate",
            "--live",
            "--modality",
            "meg",
            "--subject",
            str(assets.subject_seed),
            "--gallery",
            str(assets.gallery_dir),
            "--name",
            config.input.signal.name,
            "--n-train-images",
            "0",
            "--n-test-images",
            str(DEMO_DESIGN["n_test_images"]),
            "--test-repeats",
            "1000",
            "--design-seed",
            str(DEMO_DESIGN["design_seed"]),
            "--no-progress",
        ),
        log_dir=run_dir / "logs",
    )
    plan = SessionPlan(
        run_dir=run_dir,
        config_path=config_path,
        checkpoint=assets.checkpoint_dir,
        gallery=assets.gallery_dir,
        screenshot=screenshot,
        screenshot_after=max(1.0, args.seconds - 3.0),
        display_seconds=args.seconds + 2.0,
        extra_nodes=[subject],
    )
    collector = SessionCollector(config.bus.sub, keys=config.bus.keys_dir).start()
    supervisor = Supervisor(session_nodes(config, plan))
    print(
        f"demo running for {args.seconds:g} s ({'offscreen' if headless else 'window'}); out: {run_dir}",
        flush=True,
    )
    supervisor.start()
    t0 = time.monotonic()
    try:
        _wait_with_progress(args.seconds, collector, quiet=args.json)
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    # let the display take its screenshot and write its summary before everything stops
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not plan.display_summary.exists():
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    codes = supervisor.stop()
    collector.stop()
    display = _read_json(plan.display_summary)
    decoder = collector.last_status.get("decoder", {})
    summary = {
        "seconds": round(elapsed, 1),
        "windows": collector.windows,
        "dropped_samples": int(decoder.get("dropped_samples", 0))
        + int(decoder.get("stream_missing_samples", 0)),
        "dropped_windows": int(decoder.get("dropped_windows", 0)),
        "dropped_messages": collector.dropped_messages + _display_drops(display),
        "latency_ms": {
            "push_to_embedding": collector.push_to_embedding(),
            "sample_to_display": _latency(display, "retrieval"),
            "sample_to_image": _latency(display, "image"),
            "stages": collector.stages(),
        },
        "retrieval": collector.retrieval_summary(n_gallery),
        "images": collector.images,
        "screenshots": [str(p) for p in sorted(shots.glob("*.png"))],
        "recording": str(plan.recording),
        "restarts": {n: s["restarts"] for n, s in supervisor.status().items()},
        "exit_codes": codes,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 0


def _wait_with_progress(seconds: float, collector, quiet: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=int(seconds), desc="demo", unit="s", disable=quiet) as bar:
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(0.5)
            bar.n = int(elapsed)
            ranks = collector.ranks
            top5 = sum(r < 5 for r in ranks) / len(ranks) if ranks else 0.0
            bar.set_postfix(windows=collector.windows, top5=f"{top5:.0%}")


def _print_summary(s: dict) -> None:
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
    if r["top5"] is not None:
        print(
            f"retrieval over {r['n_gallery']} images, {r['trials']} trials: top-1 {r['top1']:.1%}, "
            f"top-5 {r['top5']:.1%} (chance {r['chance_top5']:.1%})"
        )
    print("screenshots: " + ", ".join(s["screenshots"]) if s["screenshots"] else "no screenshot was written")
