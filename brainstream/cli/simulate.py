"""``brainstream simulate``: a virtual subject, offline to a FIF file or live over LSL.

Offline::

    brainstream simulate --modality meg --subject 1 --n-train-images 600 --n-test-images 50 \\
        --test-repeats 4 --out sub-01_raw.fif [--gallery DIR] [--snr X] [--json]

Live (self-paced RSVP, or reacting to a presenter's marker stream)::

    brainstream simulate --live --modality eeg --name sim-eeg [--react-to PRESENTER] [--seconds 60]
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json
from brainstream.cli._shutdown import exit_if_supervised

HELP = "simulate a virtual MEG/EEG subject: offline to FIF (--out) or live over LSL (--live)"

DEFAULT_PROFILES = {"meg": "ctf275_things_meg", "eeg": "eeg64_1000hz"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_argument_group("mode")
    mode.add_argument("--out", metavar="FILE.fif", help="offline: write the session to this FIF file")
    mode.add_argument("--live", action="store_true", help="stream over LSL in real time instead")
    who = parser.add_argument_group("subject")
    who.add_argument("--modality", choices=("meg", "eeg"), default="meg", help="default: meg")
    who.add_argument(
        "--profile", metavar="NAME|PATH",
        help="device profile (default: ctf275_things_meg for MEG, eeg64_1000hz for EEG)",
    )  # fmt: skip
    who.add_argument("--subject", type=int, default=0, metavar="SEED", help="subject seed (default 0)")
    who.add_argument("--snr", type=float, default=None, help="signal-to-noise ratio (default: the tuned one)")
    who.add_argument(
        "--shared-fraction", type=float, default=None, metavar="F",
        help="share of the population code in the subject's tuning, 0-1 (0: simulator v1's subjects; "
        "default: the simulator's)",
    )  # fmt: skip
    who.add_argument("--gallery", metavar="DIR", help="stimulus gallery folder (default: the demo gallery)")
    who.add_argument("--line-freq", type=float, default=50.0, metavar="HZ", help="mains frequency (50)")
    design = parser.add_argument_group("RSVP design (offline, and live when self-paced)")
    design.add_argument("--n-train-images", type=int, default=600, metavar="N", help="shown once (600)")
    design.add_argument("--n-test-images", type=int, default=50, metavar="M", help="test images (50)")
    design.add_argument("--test-repeats", type=int, default=4, metavar="R", help="test repetitions (4)")
    design.add_argument("--image-s", type=float, default=0.5, metavar="S", help="image duration (0.5 s)")
    design.add_argument("--isi-s", type=float, default=1.0, metavar="S", help="blank between images (1.0 s)")
    design.add_argument("--isi-jitter-s", type=float, default=0.2, metavar="S", help="ISI jitter (±0.2 s)")
    design.add_argument("--design-seed", type=int, default=0, help="seed of image choice and order (0)")
    live = parser.add_argument_group("live")
    live.add_argument("--name", default=None, help="LSL stream name (default brainstream-sim-<modality>)")
    live.add_argument("--source-id", default=None, help="LSL source id (default from profile and seed)")
    live.add_argument("--react-to", metavar="NAME", help="respond to this external marker stream's images")
    live.add_argument(
        "--chunk-ms", type=float, default=20.0, metavar="MS", help="push period of the outlet (20 ms)"
    )
    live.add_argument(
        "--seconds", type=float, default=None, help="stop after S seconds (default: design end)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(parser)


def _design(args: argparse.Namespace):
    from brainstream.realtime.simulation.offline import RSVPDesign

    return RSVPDesign(
        n_train_images=args.n_train_images,
        n_test_images=args.n_test_images,
        test_repeats=args.test_repeats,
        image_s=args.image_s,
        isi_s=args.isi_s,
        isi_jitter_s=args.isi_jitter_s,
        design_seed=args.design_seed,
    )


def _load_inputs(args: argparse.Namespace):
    from brainstream.models.config_base import ConfigError
    from brainstream.models.device_profile import load_device_profile
    from brainstream.models.gallery import Gallery, GalleryError

    try:
        profile = load_device_profile(args.profile or DEFAULT_PROFILES[args.modality])
    except (ConfigError, FileNotFoundError, OSError) as exc:
        raise UserFacingError(f"{exc}; name a profile under configs/devices or a YAML path") from None
    if profile.modality != args.modality:
        raise UserFacingError(
            f"profile {profile.name} is {profile.modality} but --modality is {args.modality}; "
            f"pass --modality {profile.modality} or another --profile"
        )
    if args.gallery:
        try:
            gallery = Gallery.load(args.gallery)
        except (GalleryError, FileNotFoundError, OSError) as exc:
            raise UserFacingError(f"{exc}; build one with `brainstream gallery build`") from None
    else:
        from brainstream.models.demo_gallery import default_gallery_dir

        gallery = Gallery.load(default_gallery_dir())
    return profile, gallery


def run(args: argparse.Namespace) -> int:
    if bool(args.out) == bool(args.live):
        raise UserFacingError("choose one mode: --out FILE.fif (offline) or --live (LSL)")
    if args.snr is not None and args.snr < 0:
        raise UserFacingError(f"--snr must be >= 0, got {args.snr}")
    if args.shared_fraction is not None and not 0 <= args.shared_fraction <= 1:
        raise UserFacingError(f"--shared-fraction must be between 0 and 1, got {args.shared_fraction}")
    if args.seconds is not None and args.seconds <= 0:
        raise UserFacingError(f"--seconds must be positive, got {args.seconds}")
    profile, gallery = _load_inputs(args)
    design = _design(args)
    if not args.react_to:
        try:
            design.check(len(gallery.ids))
        except ValueError as exc:
            raise UserFacingError(str(exc)) from None
    return (
        _run_live(args, profile, gallery, design)
        if args.live
        else _run_offline(args, profile, gallery, design)
    )


def _run_offline(args, profile, gallery, design) -> int:
    from brainstream.realtime.simulation.offline import simulate_recording

    if args.seconds is not None or args.react_to:
        raise UserFacingError("--seconds and --react-to are live options; add --live or drop them")
    kwargs: dict = {} if args.snr is None else {"snr": args.snr}
    if args.shared_fraction is not None:
        kwargs["subject_kwargs"] = {"shared_fraction": args.shared_fraction}
    t = time.perf_counter()
    try:
        result = simulate_recording(
            args.out, profile=profile, gallery=gallery, seed=args.subject, design=design,
            line_freq=args.line_freq, overwrite=args.overwrite, progress=not args.no_progress, **kwargs,
        )  # fmt: skip
    except (FileExistsError, ValueError) as exc:
        raise UserFacingError(str(exc)) from None
    elapsed = time.perf_counter() - t
    summary = {
        "path": str(result.path),
        "n_trials": result.n_trials,
        "duration_s": round(result.duration_s, 3),
        "n_channels": result.n_channels,
        "sfreq": result.sfreq,
        "elapsed_s": round(elapsed, 2),
        "metadata": result.metadata,
    }
    if not args.json:
        print(
            f"wrote {result.path}: {result.n_trials} trials, {result.duration_s:.0f} s of "
            f"{profile.modality.upper()} ({result.n_channels} ch @ {result.sfreq:g} Hz), "
            f"SNR {result.metadata['snr']:g}, in {elapsed:.1f} s"
        )
    else:
        print_json(summary)
    return 0


def _run_live(args, profile, gallery, design) -> int:
    from brainstream.realtime.simulation.live import LiveSubject
    from brainstream.realtime.simulation.subject import VirtualSubject

    kwargs = {} if args.snr is None else {"snr": args.snr}
    if args.shared_fraction is not None:
        kwargs["shared_fraction"] = args.shared_fraction
    subject = VirtualSubject(profile, gallery, seed=args.subject, line_freq=args.line_freq, **kwargs)
    live = LiveSubject(
        subject, name=args.name or f"brainstream-sim-{profile.modality}", source_id=args.source_id,
        react_to=args.react_to, design=design, image_s=args.image_s, chunk_s=args.chunk_ms / 1000.0,
    )  # fmt: skip
    stop = threading.Event()
    # SIGINT too: a child of a supervisor started from a script inherits SIGINT ignored (no KeyboardInterrupt)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            live.start()
        except (LookupError, ValueError) as exc:
            raise UserFacingError(str(exc)) from None
        if not args.json:
            what = f"reacting to {args.react_to!r}" if args.react_to else "self-paced RSVP"
            print(
                f"streaming {live.name} ({profile.name}, {subject.n_channels} ch @ {subject.sfreq:g} Hz), "
                f"{what}; Ctrl-C to stop",
                flush=True,
            )
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while live.running and not live.finished and not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = live.summary()
    if live.stats.errors:
        raise UserFacingError(f"the live subject stopped: {live.stats.errors[-1]}")
    if args.json:
        print_json(summary)
    else:
        print(f"streamed {summary['seconds']:.1f} s, {summary['stimuli']} stimuli")
    return exit_if_supervised(0)  # under a supervisor: no slow interpreter teardown after a clean stop
