"""``brainstream evaluate --checkpoint DIR --data PATH [...] [--json]``: zero-shot retrieval.

``--reconstruction`` scores a generator instead (:mod:`brainstream.models.reconstruction_eval`): with
``--checkpoint demo --data demo`` (the defaults) the current demo encoder, the demo virtual subject's test
session (simulated once and cached) and the ``demo`` generator.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "evaluate a checkpoint: N-way zero-shot retrieval with chance and the ridge baseline, time-resolved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default=None, help="encoder checkpoint folder ('demo': the demo encoder)"
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=None,
        help="recording file(s) or dataset root ('demo': the demo subject's test session, simulated once)",
    )
    parser.add_argument(
        "--reconstruction",
        action="store_true",
        help="score a generator: 2-way identification (embedding space, HOG), PixCorr, SSIM with bootstrap "
        "CIs for true-embedding, decoded, retrieved and shuffled images (defaults: --checkpoint demo "
        "--data demo)",
    )
    parser.add_argument("--generator", default="demo", help="--reconstruction: generator config name or path")
    parser.add_argument(
        "--gallery",
        default=None,
        help="--reconstruction: gallery folder of the stimuli (default: the demo's)",
    )
    parser.add_argument(
        "--sheet", default=None, help="--reconstruction: PNG of stimuli beside their reconstructions"
    )
    parser.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "simulated", "things_meg", "things_eeg2", "xdf"],
        help="data loader (auto: from the checkpoint's training config, else from the file suffix)",
    )
    parser.add_argument("--subjects", nargs="*", default=None, help="subjects to load (THINGS datasets)")
    parser.add_argument("--n-way", type=int, default=200, help="candidates per retrieval trial (default 200)")
    parser.add_argument(
        "--plot", default=None, help="time-resolved plot PNG (default: CHECKPOINT/time_resolved.png)"
    )
    parser.add_argument(
        "--no-time-resolved", action="store_true", help="skip the sliding/growing-window analysis"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="model arithmetic (bf16: faster batched inference on CPUs with bf16 units, refused on others; "
        "embeddings within bf16 rounding of fp32; the ridge baseline stays fp32)",
    )
    parser.add_argument(
        "--bad-channels",
        nargs="*",
        default=[],
        metavar="CH",
        help="sensors to leave out (a brain module masks them, other encoders get them interpolated)",
    )
    parser.add_argument(
        "--max-missing",
        type=float,
        default=0.1,
        metavar="F",
        help="refuse recordings that lack (or have bad) more than this fraction of the checkpoint's sensors",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from brainstream.cli.train import format_metrics
    from brainstream.models.channels import ChannelMismatchError
    from brainstream.models.checkpoint import CheckpointError, load_checkpoint
    from brainstream.models.config_base import ConfigError
    from brainstream.models.evaluation import evaluate_checkpoint
    from brainstream.models.runtime.precision import check_precision
    from brainstream.models.training.data import DataError

    progress = not args.quiet
    if args.reconstruction:
        return _run_reconstruction(args, progress)
    if args.checkpoint is None or args.data is None:
        raise UserFacingError("evaluate needs --checkpoint DIR and --data PATH (or --reconstruction)")
    try:
        check_precision(args.precision, "cpu")  # bf16 only where the CPU has bf16 units
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    try:
        model, meta = load_checkpoint(args.checkpoint)
        plot = (
            None if args.no_time_resolved else Path(args.plot or Path(args.checkpoint) / "time_resolved.png")
        )
        report = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            kind=args.kind,
            subjects=args.subjects,
            n_way=args.n_way,
            time_resolved_plot=plot,
            progress=progress,
            loaded=(model, meta),
            precision=args.precision,
            bad_channels=args.bad_channels,
            max_missing=args.max_missing,
        )
    except (CheckpointError, DataError, ConfigError, FileNotFoundError, ChannelMismatchError) as exc:
        raise UserFacingError(str(exc)) from None
    if not args.json or progress:
        print(
            f"checkpoint {args.checkpoint} ({meta.arch['name']}, space {meta.space}); "
            f"ridge: {report['ridge_source']}"
        )
        print(format_metrics(report, label="all subjects"))
        ws = report["whole_set"]
        print(
            f"whole test set ({ws['n_way']}-way): top-1 {100 * ws['top1']:.1f} %, "
            f"top-5 {100 * ws['top5']:.1f} %"
        )
        for name, m in report.get("per_subject", {}).items():
            print(format_metrics(m, label=f"subject {name} ({m['mode']})"))
        if report.get("time_resolved_plot"):
            print(f"time-resolved plot: {report['time_resolved_plot']}")
    if args.json:
        print_json(report)
    return 0


def _run_reconstruction(args: argparse.Namespace, progress: bool) -> int:
    from brainstream.models.checkpoint import CheckpointError
    from brainstream.models.config_base import ConfigError
    from brainstream.models.embedders import get_embedder
    from brainstream.models.gallery import Gallery
    from brainstream.models.generation import GeneratorError, load_generator
    from brainstream.models.reconstruction import format_table
    from brainstream.models.reconstruction_eval import contact_sheet, evaluate_reconstruction
    from brainstream.models.training.data import DataError

    checkpoint, data, gallery_dir = args.checkpoint or "demo", args.data or ["demo"], args.gallery
    if "demo" in (checkpoint, *data) or gallery_dir is None:
        from brainstream.realtime.session.demo_assets import demo_test_recording, ensure_demo_assets

        assets = ensure_demo_assets(progress=progress)
        checkpoint = str(assets.checkpoint_dir) if checkpoint == "demo" else checkpoint
        gallery_dir = gallery_dir or str(assets.gallery_dir)
        if data == ["demo"]:
            data = [str(demo_test_recording(assets, progress=progress))]
    try:
        gallery = Gallery.load(gallery_dir)
        generator = load_generator(args.generator)
        embedder = get_embedder(gallery.embedder or "demo", dim=gallery.dim)
        report = evaluate_reconstruction(
            checkpoint, data, generator, gallery, embedder, kind=args.kind, progress=progress
        )
    except (CheckpointError, DataError, ConfigError, GeneratorError, FileNotFoundError) as exc:
        raise UserFacingError(str(exc)) from None
    images = report.pop("images")
    if args.sheet:
        report["sheet"] = str(contact_sheet({"images": images}, args.sheet))
    if not args.json or progress:
        print(
            f"reconstruction of {report['n_test_images']} test images ({report['n_test_trials']} trials), "
            f"encoder {checkpoint}, generator {args.generator}; retrieval over "
            f"{report['gallery_size']} images"
        )
        print(format_table(report["table"]))
        if report.get("sheet"):
            print(f"contact sheet: {report['sheet']}")
    if args.json:
        print_json(report)
    return 0
