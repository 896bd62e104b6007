"""``brainstream live --config configs/pipelines/FILE.yaml [--subject ID] [--nodes NAMES]``: a lab session.

Starts the graph as separate processes (broker, decoder, retrieval, generator, recorder, display), restarts
a node that crashes (logging why) and shuts everything down cleanly on Ctrl-C. With ``--nodes`` this host
runs only its part of a session split across machines (docs/lab_setup.md): every host runs the same config,
the bus host binds ``bus.host``, the others connect to it. While it runs, ``live`` watches the bus and ends
with a summary: windows, latencies (per hop between nodes, across hosts corrected with LSL's clock offsets)
and the hosts' clock offsets.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "run a live decoding session: broker, decoder, retrieval, generator, recorder, display"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pipeline config (configs/pipelines/FILE.yaml)")
    parser.add_argument("--subject", default=None, help="subject id; loads SUBJECTS_DIR/ID (a calibration)")
    parser.add_argument("--subjects-dir", default="subjects", help="where calibration wrote subject profiles")
    parser.add_argument("--run-dir", default=None, help="session output folder (default runs/<time>)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--no-display", action="store_true", help="run without the display")
    parser.add_argument(
        "--nodes",
        default=None,
        metavar="NAMES",
        help="comma-separated nodes this host runs (bus,decoder,retrieval,generator,recorder,display); "
        "default: all of them",
    )
    parser.add_argument(
        "--host-name",
        default=None,
        metavar="NAME",
        help="this host's name in status messages and clock offsets (default: $BRAINSTREAM_HOST or the "
        "machine's host name); needed where two hosts share a host name",
    )
    add_json_flag(parser)


def _subject_checkpoint(subjects_dir: str, subject: str) -> Path:
    from brainstream.calibration.profile import ProfileError, load_subject_profile

    try:
        return load_subject_profile(subjects_dir, subject).encoder_dir
    except ProfileError as exc:
        raise UserFacingError(f"{exc}; run `brainstream calibrate --subject {subject}` first") from None


def run(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import ConfigError
    from brainstream.realtime.bus.host import HOST_ENV, host_name
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.graph import SessionEvents, SessionPlan, is_split, session_nodes
    from brainstream.realtime.session.supervisor import Supervisor, interrupt_on_signals

    try:
        config = load_pipeline_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    checkpoint = None
    if args.subject:
        config = config.model_copy(update={"subject": args.subject})
        checkpoint = _subject_checkpoint(args.subjects_dir, args.subject)
    if args.host_name is not None:
        if not args.host_name.strip() or any(c.isspace() for c in args.host_name):
            raise UserFacingError(f"--host-name must be a word such as gpu-1, got {args.host_name!r}")
        os.environ[HOST_ENV] = args.host_name  # the nodes inherit it
    only = None if args.nodes is None else [n.strip() for n in args.nodes.split(",") if n.strip()]
    run_dir = Path(args.run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    plan = SessionPlan(
        run_dir=run_dir,
        config_path=Path(args.config),
        checkpoint=checkpoint,
        display=not args.no_display,
        only=only,
    )
    try:
        nodes = session_nodes(config, plan)
    except ValueError as exc:
        raise UserFacingError(f"--nodes {args.nodes}: {exc}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    split = is_split(config, plan)
    host = host_name()
    from brainstream.realtime.bus import KeysError

    try:
        watch = _Watch(config, split)
    except KeysError as exc:  # every node would fail the same way: say it once, before starting any
        raise UserFacingError(f"bus.keys_dir: {exc}") from None
    print(
        f"live session '{config.name}' for subject {config.subject} on host {host}: "
        f"{', '.join(n.name for n in nodes)}; bus {config.bus.sub}; outputs in {run_dir}; Ctrl-C stops"
    )
    events = SessionEvents(config)  # restarts go into the session recording
    supervisor = Supervisor(nodes, on_event=events)
    with interrupt_on_signals():  # SIGTERM too, and SIGINT even when a script started us with it ignored
        supervisor.start()
        t0 = time.monotonic()
        try:
            while args.seconds is None or time.monotonic() - t0 < args.seconds:
                time.sleep(0.1)
        except KeyboardInterrupt:
            print("stopping...", flush=True)
        finally:
            codes = supervisor.stop()
            events.close()
            report = watch.stop()
    summary = {
        "host": host,
        "nodes": [n.name for n in nodes],
        "run_dir": str(run_dir),
        "recording": str(plan.recording),
        "exit_codes": codes,
        "restarts": {n: s["restarts"] for n, s in supervisor.status().items()},
        "events": [f"{node}: {what}" for _, node, what in supervisor.events],
        **report,
        "stop_seconds": round(supervisor.stop_seconds or 0.0, 2),
    }
    if args.json:
        print_json(summary)
    else:
        print(json.dumps(summary, indent=1))
    return 0


class _Watch:
    """What ``live`` keeps an eye on: the bus (a collector) and, in a split session, this host's clock
    beacon plus the other hosts' clock offsets."""

    def __init__(self, config, split: bool) -> None:
        from brainstream.realtime.session.clocks import ClockBeacon, HostClocks
        from brainstream.realtime.session.collector import SessionCollector

        self.clocks = HostClocks() if split else None
        self.collector = SessionCollector(config.bus.sub, keys=config.bus.keys_dir, clocks=self.clocks)
        self.collector.start()
        self.beacon = ClockBeacon() if split else None
        if self.clocks is not None:
            self.clocks.start()

    def stop(self) -> dict:
        self.collector.stop()
        if self.clocks is not None:
            self.clocks.stop()
        if self.beacon is not None:
            self.beacon.close()
        c = self.collector
        return {
            "windows": c.windows,
            "retrievals": c.retrievals,
            "images": c.images,
            "latency_ms": {
                "push_to_embedding": c.push_to_embedding(),
                "hops": c.hops(),
                "stages": c.stages(),
            },
            "clocks": c.clock_report(),
            "dropped_messages": c.dropped_messages,
        }
