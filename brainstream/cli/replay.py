"""``brainstream replay FILE [--speed X] [--loop] [--name NAME] [--source-id ID] [--chunk-ms 10]
[--no-markers] [--events-from-stim auto|CHANNEL] [--wait S] [--start S] [--duration S]``."""

from __future__ import annotations

import argparse
import signal
import threading
import time

from brainstream.cli import UserFacingError
from brainstream.cli._output import progress_bar

# seconds the replay waits for its first consumers by default: enough for a recorder or decoder started
# beside it to resolve the outlets and connect
DEFAULT_WAIT_S = 5.0
# seconds the outlets stay up after the last push while consumers are connected, so they get the last push
LINGER_S = 1.0

HELP = "play a recording (FIF, EDF, BDF, BrainVision, EEGLAB, BIDS, XDF) as real-time LSL streams"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="recording to play (a BIDS recording is read with its events)"
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, metavar="X", help="play X times faster (default 1)"
    )
    parser.add_argument("--loop", action="store_true", help="start over at the end until Ctrl-C")
    parser.add_argument("--name", default=None, help="name of the signal outlet (default: the file name)")
    parser.add_argument("--source-id", default=None, metavar="ID", help="LSL source id of the signal outlet")
    parser.add_argument(
        "--chunk-ms", type=float, default=10.0, help="milliseconds between pushes (default 10)"
    )
    parser.add_argument(
        "--no-markers", action="store_true", help="do not replay annotations/events as markers"
    )
    parser.add_argument(
        "--events-from-stim",
        default=None,
        metavar="auto|CHANNEL",
        help="also replay the events of a stim channel as markers (mne.find_events; the trigger value as "
        "text): a channel name (THINGS-MEG: UPPT001), or auto (STI101, STI 014, UPPT001, Status, ... or the "
        "first stim channel)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="S",
        help="wait up to S seconds for a first consumer of every outlet (signal and markers) before "
        f"starting, so that it receives sample 0 and marker 0 (default {DEFAULT_WAIT_S:g}; 0: start at once)",
    )
    parser.add_argument("--start", type=float, default=0.0, metavar="S", help="start S seconds into the file")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="play only S seconds")
    parser.add_argument(
        "--spin-ms",
        type=float,
        default=0.5,
        help="spin on the clock for the last MS before each push (absorbs late wake-ups; costs about "
        "spin/chunk of a core; 0 only sleeps; default 0.5)",
    )
    parser.add_argument(
        "--no-priority",
        action="store_true",
        help="keep the push thread at normal priority (default: real-time priority when the OS allows it)",
    )


def run(args: argparse.Namespace) -> int:
    from brainstream.realtime.replay import Player, UnsupportedRecordingError

    if args.wait < 0:
        raise UserFacingError(f"--wait must be >= 0 seconds (0: start at once), got {args.wait}")
    if args.no_markers and args.events_from_stim:
        raise UserFacingError("--events-from-stim makes markers and --no-markers drops them: choose one")
    try:
        player = Player(
            args.file, speed=args.speed, loop=args.loop, start=args.start, duration=args.duration,
            chunk_ms=args.chunk_ms, name=args.name, source_id=args.source_id, markers=not args.no_markers,
            events_from_stim=args.events_from_stim, wait_for_consumers=args.wait, spin_ms=args.spin_ms,
            priority=not args.no_priority,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise UserFacingError(f"{exc}; give the path of a recording file") from None
    except UnsupportedRecordingError as exc:
        raise UserFacingError(str(exc)) from None
    except ValueError as exc:
        raise UserFacingError(
            f"{exc}; check --speed, --chunk-ms, --spin-ms, --wait, --start, --duration and --events-from-stim"
        ) from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    player.open()
    for spec in player.specs:
        kind = "markers" if spec.is_markers else f"{len(spec.ch_names)} ch @ {spec.sfreq:g} Hz"
        print(f"outlet {spec.name!r} ({spec.stype}, {kind})", flush=True)
    if args.wait > 0:
        print(f"waiting up to {args.wait:g} s for a consumer of every outlet", flush=True)
    player.start()
    span = player.stop_s - player.start_s
    try:
        with progress_bar(
            total=None if args.loop else round(span, 1), unit="s", desc="replay", leave=False
        ) as bar:
            t_wall = None
            while not player.join(0.2) and not stop.is_set():
                if player.stats.t0 is None:  # still waiting for consumers
                    continue
                t_wall = t_wall or time.monotonic()
                if not args.loop:
                    bar.update(round(min(span, (time.monotonic() - t_wall) * player.speed), 1) - bar.n)
        if player.stats.finished and player.error is None and not stop.is_set():
            player.linger(LINGER_S)
    except KeyboardInterrupt:
        pass
    finally:
        player.stop()
        signal.signal(signal.SIGTERM, previous)
        player.close()
    st = player.stats
    pushed = ", ".join(f"{k}: {v}" for k, v in st.samples.items())
    print(
        f"pushed {pushed}; {st.pushes} pushes, "
        f"worst lag {st.worst_lag_ms:.2f} ms, mean {st.mean_lag_ms:.2f} ms"
    )
    if st.unheard:
        print(
            f"no consumer for {', '.join(st.unheard)} within --wait {args.wait:g} s: its start was not heard"
        )
    if player.error is not None:
        raise UserFacingError(f"replay stopped: {player.error}")
    return 0
