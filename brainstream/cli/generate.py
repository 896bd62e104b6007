"""``brainstream generate --config configs/generator/FILE.yaml``: the generator node."""

from __future__ import annotations

import argparse
import json

from brainstream.cli import UserFacingError
from brainstream.cli._shutdown import exit_if_supervised, serve

#: niceness of a generator rendering on the CPU (docs/architecture.md §3: latency-critical nodes first)
CPU_NICE = 10

HELP = "generator node: turn embeddings on the bus into images (tiny on CPU, SDXL-Turbo + IP-Adapter on GPU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from brainstream.realtime.bus import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT

    parser.add_argument(
        "--config", default="tiny", help="generator config: a name under configs/generator/ or a YAML path"
    )
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="override the config")
    parser.add_argument(
        "--test-images",
        default=None,
        metavar="FILE",
        help="the session's test image ids, one per line: images of their windows carry their 2-way "
        "identification among them (demo space; needs --gallery)",
    )
    parser.add_argument("--gallery", default=None, help="gallery of the test images ('demo' or a folder)")
    parser.add_argument("--sub", default=DEFAULT_SUB_ENDPOINT, help="bus endpoint to read embeddings from")
    parser.add_argument("--pub", default=DEFAULT_PUB_ENDPOINT, help="bus endpoint to publish images to")
    parser.add_argument("--keys", default=None, metavar="DIR", help="CURVE keys folder (brainstream keys)")
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help=f"scheduling niceness (default {CPU_NICE} when rendering on the CPU, else 0): a CPU generator "
        "is the session's bulk consumer; a lower priority lets the decoder, retrieval and display preempt it",
    )


def run(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import ConfigError
    from brainstream.models.generation import GeneratorError, load_generator_config
    from brainstream.realtime.bus import InsecureBindError, KeysError
    from brainstream.realtime.services import GeneratorNode

    try:
        config = load_generator_config(args.config)
        if args.device is not None:
            config = config.model_copy(update={"device": args.device})
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    _lower_priority(args.nice if args.nice is not None else (CPU_NICE if _renders_on_cpu(config) else 0))
    print(
        f"generator node: {config.backend} ({config.width}x{config.height}, {config.steps} step(s)), "
        f"space {config.space!r}; loading...",
        flush=True,
    )
    identify = None
    if args.test_images:
        from brainstream.models.gallery import GalleryError, read_image_ids
        from brainstream.realtime.services.retrieval_node import resolve_gallery

        try:
            ids = read_image_ids(args.test_images)
            identify = (ids, resolve_gallery(args.gallery or "demo").embeddings_for(ids))
        except GalleryError as exc:
            raise UserFacingError(str(exc)) from None
    node = GeneratorNode(
        config, identify=identify, sub_endpoint=args.sub, pub_endpoint=args.pub, keys=args.keys
    )
    try:
        ready = f"generator node ready: embeddings from {args.sub}, images to {args.pub}; Ctrl-C stops"
        serve(node, on_ready=lambda: print(ready, flush=True))  # SIGINT, SIGTERM; standby until promoted
    except (GeneratorError, InsecureBindError, KeysError, OSError) as exc:
        raise UserFacingError(str(exc)) from None
    print("generator node stopped: " + json.dumps(node.stats, default=float), flush=True)
    return exit_if_supervised(0)


def _renders_on_cpu(config) -> bool:
    if config.device == "cpu":
        return True
    if config.device == "auto":
        import torch

        return not torch.cuda.is_available()
    return False


def _lower_priority(nice: int) -> None:
    """Add ``nice`` to this process's niceness before any thread starts (threads inherit it)."""
    import os

    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)
