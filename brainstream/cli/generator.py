"""``brainstream generator train --config demo``: train the generator of the demo embedding space.

The demo stimulus set minus the demo session's test images is the training data; the weights are written
where the config's ``weights`` points (the shipped file for ``demo``) unless ``--out`` says otherwise. A
stopped run resumes from ``<weights>.work/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "train the generator of the demo embedding space (x0-prediction, 1-4 steps)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    train = sub.add_parser("train", help="train a backend: trained generator config on the demo stimuli")
    train.add_argument("--config", default="demo", help="generator config: a name or a YAML path")
    train.add_argument("--out", default=None, help="weights file to write (default: the config's weights)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_flag(train)


def run(args: argparse.Namespace) -> int:
    from brainstream.models.config_base import ConfigError
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.embedders import get_embedder
    from brainstream.models.gallery import Gallery
    from brainstream.models.generation import GeneratorError, load_generator_config
    from brainstream.models.generation.training import train_generator
    from brainstream.realtime.session.demo_assets import demo_generator_data

    try:
        config = load_generator_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    if config.backend != "trained":
        raise UserFacingError(
            f"config {config.name!r} has backend {config.backend!r}; only 'trained' generators are trained "
            "here (e.g. --config demo)"
        )
    out = Path(args.out or config.weights or "")
    gallery = Gallery.load(default_gallery_dir())
    embedder = get_embedder("demo", dim=config.embed_dim)
    images = [gallery.load_image(i) for i in gallery.ids]
    exclude, data_version = demo_generator_data(gallery)
    print(
        f"training generator {config.name!r} on the {len(gallery.ids)} demo images but the {len(exclude)} "
        f"test images (and a few kept for validation) into {out}",
        flush=True,
    )
    try:
        result = train_generator(
            config,
            images,
            list(gallery.ids),
            exclude,
            embedder,
            out,
            data_version=data_version,
            progress=not args.no_progress,
        )
    except GeneratorError as exc:
        raise UserFacingError(str(exc)) from None
    result.pop("validation_ids", None)
    if args.json:
        print_json(result)
    else:
        print(f"wrote {result['path']} (fingerprint {result['fingerprint']}) in {result['seconds']:.0f} s")
    return 0
