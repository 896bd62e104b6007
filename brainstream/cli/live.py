"""``brainstream live --config configs/pipelines/FILE.yaml [--subject ID]``: a whole lab session.

Starts the graph as separate processes (broker, decoder, retrieval, generator, recorder, display), restarts
a node that crashes (logging why) and shuts everything down cleanly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
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
    add_json_flag(parser)


def _subject_checkpoint(subjects_dir: str, subject: str) -> Path:
    from brainstream.calibration.profile import ProfileError, load_subject_profile

    try:
        return load_subject_profile(subjects_dir, subject).encoder_dir
    except ProfileError as exc:
        raise UserFacingError(f"{exc}; run `brainstream calibrate --subject {subject}` first") from None


def run(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import ConfigError
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.graph import SessionPlan, session_nodes
    from brainstream.realtime.session.supervisor import Supervisor

    try:
        config = load_pipeline_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    checkpoint = None
    if args.subject:
        config = config.model_copy(update={"subject": args.subject})
        checkpoint = _subject_checkpoint(args.subjects_dir, args.subject)
    run_dir = Path(args.run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = SessionPlan(
        run_dir=run_dir, config_path=Path(args.config), checkpoint=checkpoint, display=not args.no_display
    )
    supervisor = Supervisor(session_nodes(config, plan))
    print(f"live session '{config.name}' for subject {config.subject}: outputs in {run_dir}; Ctrl-C stops")
    supervisor.start()
    t0 = time.monotonic()
    try:
        while args.seconds is None or time.monotonic() - t0 < args.seconds:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping...")
    finally:
        codes = supervisor.stop()
    summary = {
        "run_dir": str(run_dir),
        "recording": str(plan.recording),
        "exit_codes": codes,
        "restarts": {n: s["restarts"] for n, s in supervisor.status().items()},
        "events": [f"{node}: {what}" for _, node, what in supervisor.events],
    }
    if args.json:
        print_json(summary)
    else:
        print(json.dumps(summary, indent=1))
    return 0
