"""``brainstream train --config FILE [--data PATH ...] --out DIR [--loso] [--json]``: train an encoder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "train an encoder (selection on validation images; test metrics and ridge baseline once, at the end)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="training config (path or name under configs/training/)"
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=None,
        help="recording file(s) or dataset root; replaces the config's data.paths",
    )
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--max-epochs", type=int, default=None, help="override optim.max_epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument(
        "--loso",
        action="store_true",
        help="also run leave-one-subject-out (one model per held-out subject); writes OUT/loso.json",
    )
    parser.add_argument(
        "--save-trials",
        default=None,
        help="also save the preprocessed trials to this .npz (reuse with --data)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(parser)


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def format_metrics(m: dict, label: str = "test") -> str:
    """A small human-readable table of one issue-format metrics dict."""
    ridge = m.get("ridge") or {}
    avg = m.get("averaged") or {}
    ravg = avg.get("ridge") or {}
    lines = [
        f"{label}: {m['n_way']}-way zero-shot retrieval (%)      top-1  top-5",
        f"  model, single trial                        {_pct(m['top1'])}  {_pct(m['top5'])}"
        f"   (median rank {m['median_rank']:g})",
        f"  ridge, single trial                        {_pct(ridge.get('top1'))}  {_pct(ridge.get('top5'))}",
        f"  model, repetition-averaged                 {_pct(avg.get('top1'))}  {_pct(avg.get('top5'))}",
        f"  ridge, repetition-averaged                 {_pct(ravg.get('top1'))}  {_pct(ravg.get('top5'))}",
        f"  chance                                     {_pct(m['chance_top1'])}  {_pct(m['chance_top5'])}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from brainstream.models.checkpoint import CheckpointError
    from brainstream.models.config_base import ConfigError
    from brainstream.models.training.config import load_training_config
    from brainstream.models.training.data import DataError

    try:
        config = load_training_config(args.config)
        updates = {}
        if args.data:
            updates["data"] = config.data.model_copy(update={"paths": [str(p) for p in args.data]})
        if args.max_epochs is not None:
            updates["optim"] = config.optim.model_copy(update={"max_epochs": args.max_epochs})
        if args.seed is not None:
            updates["seed"] = args.seed
        config = config.model_copy(update=updates)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    from brainstream.models.evaluation import leave_one_subject_out
    from brainstream.models.training.loading import load_data
    from brainstream.models.training.trainer import train

    out = Path(args.out)
    try:
        data = load_data(config, progress=not args.quiet)
        if args.save_trials:
            from brainstream.models.training.data import save_encoding_data

            save_encoding_data(args.save_trials, data)
        result = train(config, out, data=data, progress=not args.quiet)
        loso = leave_one_subject_out(config, data, progress=not args.quiet) if args.loso else None
    except (DataError, CheckpointError, ConfigError, FileNotFoundError) as exc:
        raise UserFacingError(f"{exc}") from None
    if loso is not None:
        (out / "loso.json").write_text(json.dumps(loso, indent=2) + "\n")
    sel = result.details["selection"]
    if not args.json or not args.quiet:
        print(f"checkpoint: {out}  (λ={sel['chosen_lambda']:g} chosen on validation by {sel['metric']})")
        print(format_metrics(result.metrics))
        if loso is not None:
            for name, m in loso["subjects"].items():
                print(format_metrics(m, label=f"leave-one-subject-out, held out {name}"))
    if args.json:
        print_json(
            {
                "checkpoint": str(out),
                "metrics": result.metrics,
                "chosen_lambda": sel["chosen_lambda"],
                "seconds": result.details["seconds"],
                "loso": loso,
            }
        )
    return 0
