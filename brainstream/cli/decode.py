"""``brainstream decode --config configs/pipelines/FILE.yaml``: the decoder node on its own."""

from __future__ import annotations

import argparse
import json

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "run the decoder node: LSL stream → windows → encoder → embeddings on the bus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pipeline config (configs/pipelines/FILE.yaml)")
    parser.add_argument("--checkpoint", default=None, help="override the config's encoder checkpoint folder")
    parser.add_argument("--subject", default=None, help="override the config's subject id")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--incremental",
        choices=["auto", "on", "off"],
        default=None,
        help="sliding windows of a causal checkpoint: compute only each stride's new samples "
        "(default: the config's windowing.incremental; auto: on exactly when the checkpoint is causal)",
    )
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import ConfigError
    from brainstream.realtime.acquisition import StreamResolveError
    from brainstream.realtime.decoder.node import build_decoder_node
    from brainstream.realtime.pipeline_config import load_pipeline_config

    try:
        config = load_pipeline_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    if args.subject:
        config = config.model_copy(update={"subject": args.subject})
    if args.incremental is not None:
        value = {"auto": None, "on": True, "off": False}[args.incremental]
        try:
            windowing = config.windowing.model_validate(
                {**config.windowing.model_dump(), "incremental": value}
            )
        except ValueError as exc:
            raise UserFacingError(f"--incremental {args.incremental}: {exc}") from None
        config = config.model_copy(update={"windowing": windowing})
    try:
        node = build_decoder_node(config, checkpoint=args.checkpoint)
        node.start()
    except (StreamResolveError, ValueError, FileNotFoundError) as exc:
        raise UserFacingError(f"{exc}") from None
    try:
        node.wait(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
        node.publisher.close()
    summary = node.status()
    if args.json:
        print_json(summary)
    else:
        print(json.dumps(summary, indent=1, default=float))
    return 0
