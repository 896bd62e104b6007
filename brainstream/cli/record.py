"""``brainstream record OUT.xdf --stream NAME [--stream NAME ...] [--duration S] [--json]``."""

from __future__ import annotations

import argparse
import time

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json
from brainstream.cli._shutdown import stop_on_signals

# how long each --stream may take to appear on the network
RESOLVE_TIMEOUT_S = 10.0

HELP = "record LSL streams (signals and markers) into a crash-safe XDF file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", metavar="OUT.xdf", help="output XDF file (written incrementally, fsynced each 0.5 s)"
    )
    parser.add_argument(
        "--stream", action="append", required=True, metavar="NAME",
        help="LSL stream name to record; repeat for several streams",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from brainstream.realtime.recording import Recorder

    if args.duration is not None and args.duration <= 0:
        raise UserFacingError(f"--duration must be positive seconds, got {args.duration}")
    if not str(args.out).lower().endswith(".xdf"):
        raise UserFacingError(f"the output file must end in .xdf, got {args.out!r}")
    # SIGINT and SIGTERM (a supervisor stopping us) close the file alike
    signals = stop_on_signals()
    stop = signals.__enter__()
    rec = Recorder(args.out)
    rec.start()
    t_start = time.monotonic()
    try:
        for name in args.stream:
            try:
                rec.add_stream(name, timeout=RESOLVE_TIMEOUT_S)
            except LookupError as exc:
                raise UserFacingError(str(exc)) from None
            except ValueError as exc:
                if "match" in str(exc):  # several outlets share the name; the CLI selects by name only
                    raise UserFacingError(
                        f"{exc}; stop the extra outlet, or record from Python with "
                        "Recorder.add_stream(name, source_id=...)"
                    ) from None
                raise UserFacingError(f"stream {name!r} cannot be recorded: {exc}") from None
        print(f"recording {', '.join(args.stream)} -> {rec.paths[0]} (Ctrl-C to stop)", flush=True)
        total = args.duration
        with tqdm(
            total=total, unit="s", disable=not _tty(), bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s"
        ) as bar:
            while not stop.is_set() and not rec.failed:
                elapsed = time.monotonic() - t_start
                if total is not None and elapsed >= total:
                    break
                stop.wait(0.2 if total is None else min(0.2, max(0.0, total - elapsed)))
                bar.n = min(elapsed, total) if total is not None else elapsed
                bar.refresh()
    finally:
        rec.stop()
        signals.__exit__(None, None, None)
    stats = rec.stats
    result = {
        "paths": [str(p) for p in rec.paths],
        "duration_s": time.monotonic() - t_start,
        "streams": {name: s["samples"] for name, s in stats["streams"].items()},
        "bytes_written": stats["bytes_written"],
        "alarms": rec.alarms,
        "gaps": {n: s["missing_samples"] for n, s in stats["streams"].items() if s.get("gaps")},
        "events": rec.events,  # also in the file, as the session-events marker stream
    }
    for name, n in result["streams"].items():
        print(f"  {name}: {n} samples")
    for alarm in rec.alarms:
        print(f"ALARM: {alarm}")
    if args.json:
        print_json(result)
    return 1 if rec.failed else 0


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()
