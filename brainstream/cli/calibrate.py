"""``brainstream calibrate``: adapt the system to one person (docs/architecture.md §1: calibration/).

::

    brainstream calibrate --subject S01 --protocol configs/calibration/rsvp.yaml --out subjects \\
        [--virtual-subject SEED] [--speed X] [--stream NAME] [--json]

Shows the RSVP protocol in a Qt window while recording the device stream and the presenter's markers, then
adapts the pretrained encoder, writes ``SUBJECTS_DIR/<ID>/`` (profile, encoder, runs, report) for
``brainstream live --subject ID``. An interrupted calibration (Escape, Ctrl-C, crash) resumes where it
stopped when the same command runs again. ``--virtual-subject SEED`` closes the loop with a simulated subject
that reacts to the presenter; ``--speed X`` then runs X times faster than real time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

logger = logging.getLogger(__name__)

HELP = "calibrate a subject: RSVP presentation + recording, few-shot adaptation, report, subject profile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", required=True, metavar="ID", help="subject id (folder name), e.g. S01")
    parser.add_argument(
        "--protocol", default="rsvp", metavar="FILE",
        help="calibration protocol (configs/calibration/NAME.yaml or a path; default rsvp)",
    )  # fmt: skip
    parser.add_argument(
        "--out", default="subjects", metavar="SUBJECTS_DIR", help="subjects folder (subjects)"
    )
    parser.add_argument(
        "--virtual-subject", type=int, default=None, metavar="SEED",
        help="closed loop: a simulated subject (this seed) reacts to the presenter",
    )  # fmt: skip
    parser.add_argument(
        "--speed", type=float, default=1.0, metavar="X", help="run X times faster (virtual subject only)"
    )
    parser.add_argument("--stream", default=None, metavar="NAME", help="the device's LSL stream name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--max-trials", type=int, default=None, metavar="N",
        help="stop after N trials of this run (resume later with the same command)",
    )  # fmt: skip
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from brainstream.calibration.pretrained import PretrainedError
    from brainstream.calibration.profile import ProfileError
    from brainstream.calibration.protocol import load_protocol
    from brainstream.calibration.runs import CalibrationError
    from brainstream.calibration.session import calibrate
    from brainstream.models.config_base import ConfigError

    if args.speed <= 0:
        raise UserFacingError(f"--speed must be positive, got {args.speed}")
    if args.max_trials is not None and args.max_trials < 1:
        raise UserFacingError(f"--max-trials must be at least 1, got {args.max_trials}")
    if args.virtual_subject is None and not args.stream:
        raise UserFacingError(
            "name the EEG/MEG device's LSL stream: --stream NAME (see `brainstream streams`), or close the "
            "loop with a simulated subject: --virtual-subject SEED"
        )
    if args.virtual_subject is None and args.speed != 1.0:
        raise UserFacingError("--speed needs --virtual-subject: a person watches in real time")
    _choose_screen(args.virtual_subject is not None)
    try:
        config = load_protocol(args.protocol)
    except (ConfigError, FileNotFoundError) as exc:
        raise UserFacingError(f"{exc}; protocols live in configs/calibration/") from None
    t0 = time.perf_counter()
    try:
        outcome = calibrate(
            args.subject, config, args.out, virtual_subject=args.virtual_subject, signal_stream=args.stream,
            speed=args.speed, max_trials=args.max_trials, progress=not args.no_progress,
        )  # fmt: skip
    except (CalibrationError, PretrainedError, ProfileError, ValueError) as exc:
        raise UserFacingError(str(exc)) from None
    total = time.perf_counter() - t0
    if not outcome.complete:
        last = outcome.runs[-1] if outcome.runs else None
        why = last.reason if last else "nothing recorded"
        msg = (
            f"calibration of {args.subject} stopped at trial {outcome.next_index}/{outcome.n_schedule} "
            f"({why});"
            " everything recorded is kept: run the same command again to resume"
        )
        if args.json:
            print_json(
                {"complete": False, "trials_done": outcome.next_index, "trials_total": outcome.n_schedule,
                 "runs": [str(r.xdf) for r in outcome.runs], "reason": why}
            )  # fmt: skip
        else:
            print(msg)
        return 3
    summary = dict(outcome.summary)
    seconds = {k: round(v, 1) for k, v in {**outcome.seconds, "total": total}.items()}
    if args.json:
        # the JSON is exactly the issue's; timings go to stderr
        print("seconds: " + json.dumps(seconds), file=sys.stderr, flush=True)
        print_json(summary)
    else:
        _print_summary(args.subject, summary, seconds, outcome.profile)
    return 0


def _print_summary(subject: str, s: dict, seconds: dict, profile) -> None:
    def pct(v):
        return "—" if v is None else f"{100 * v:5.1f} %"

    ref = s.get("reference") or {}
    print(f"\ncalibration of {subject}: {s['trials']} trials")
    print(f"  chance top-5    {pct(s['chance_top5'])}")
    print(f"  zero-shot top-5 {pct(s['zero_shot']['top5'])}")
    print(f"  ridge top-5     {pct(s['ridge']['top5'])}")
    print(f"  adapted top-1   {pct(s['adapted']['top1'])}   top-5 {pct(s['adapted']['top5'])}")
    print(f"  reference top-5 {pct(ref.get('top5'))}")
    print(f"  chosen: {profile.chosen_model}; profile {profile.root}; report {s['report']}")
    print("  seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))


def _choose_screen(virtual: bool) -> None:
    """Without a screen a closed loop renders offscreen; a person needs a screen to watch."""
    from brainstream.realtime.display.app import has_screen

    if has_screen():
        return
    if not virtual:
        raise UserFacingError(
            "no screen found (neither DISPLAY nor WAYLAND_DISPLAY is set): the presenter shows the images to "
            "the subject, so run calibrate on the machine attached to the stimulus screen"
        )
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    logger.info("no screen found: the closed-loop presenter renders offscreen")
