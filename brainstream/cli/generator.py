"""``brainstream generator train|prior --config demo``: train the generator of the demo embedding space and
choose its embedding prior.

``train``: the demo stimulus set minus the demo session's test images is the training data; the weights are
written where the config's ``weights`` points (the shipped file for ``demo``) unless ``--out`` says
otherwise. A stopped run resumes from ``<weights>.work/``.

``prior``: the embedding prior (:mod:`brainstream.models.generation.prior`) is chosen on *validation*
trials: the demo subject is simulated watching images that are neither the demo test images nor images the
demo encoder trained on (cached like the test session), the demo encoder decodes them, and ``k`` and the
temperature are picked by the 2-way identification of the images generated from them. Two banks compete:
the generator's training images minus those validation images, and the augmented copies of the same images
that the generator trained on (a denser bank). Written where the config's ``prior`` points.
It also reports how noisy the decoded embeddings are (signal, noise: the levels the generator recipe's
embedding augmentation uses).
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
    prior = sub.add_parser("prior", help="choose the embedding prior of a generator on validation trials")
    prior.add_argument("--config", default="demo", help="generator config: a name or a YAML path")
    prior.add_argument("--out", default=None, help="prior file to write (default: the config's prior)")
    prior.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_flag(prior)


def run(args: argparse.Namespace) -> int:
    if args.action == "prior":
        return _run_prior(args)
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


# the validation session: a different design seed shows other images than the demo session's
VALIDATION_DESIGN = {"n_train_images": 0, "n_test_images": 400, "test_repeats": 1, "design_seed": 1}


def _validation_recording(assets, progress: bool) -> Path:
    """The demo subject watching ``VALIDATION_DESIGN``'s images once each, simulated once and cached."""
    from brainstream.realtime.session.demo_assets import demo_session_recording

    return demo_session_recording(assets, VALIDATION_DESIGN, "validation", progress)


def _run_prior(args: argparse.Namespace) -> int:
    import numpy as np

    from brainstream.models.config_base import ConfigError
    from brainstream.models.embedders import get_embedder
    from brainstream.models.gallery import Gallery
    from brainstream.models.generation import GeneratorError, load_generator, load_generator_config
    from brainstream.models.generation.prior import estimate_embedding_noise, select_prior
    from brainstream.models.generation.trained import read_metadata
    from brainstream.models.generation.training import augmented_embeddings, split_ids
    from brainstream.models.reconstruction_eval import decode_test_trials
    from brainstream.realtime.session.demo_assets import (
        DEMO_DESIGN,
        demo_generator_data,
        ensure_demo_assets,
    )
    from brainstream.realtime.simulation.offline import RSVPDesign, make_rsvp_schedule

    progress = not args.no_progress
    try:
        config = load_generator_config(args.config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    out = args.out or config.prior
    if config.backend != "trained" or out is None:
        raise UserFacingError(
            f"config {config.name!r}: a prior is chosen for a trained generator and written where --out or "
            "the config's prior points; give one of them"
        )
    assets = ensure_demo_assets(progress=progress)
    gallery = Gallery.load(assets.gallery_dir)
    exclude, _ = demo_generator_data(gallery)
    encoder_train = {t.image_id for t in make_rsvp_schedule(gallery.ids, RSVPDesign(**DEMO_DESIGN))}
    recording = _validation_recording(assets, progress)
    try:
        generator = load_generator(config.model_copy(update={"prior": None}))
        trials, decoded, _, _, space = decode_test_trials(
            assets.checkpoint_dir, [str(recording)], (("generator", generator.space),), progress=progress
        )
    except GeneratorError as exc:
        raise UserFacingError(str(exc)) from None
    # validation images: unseen by the encoder (its decoded embeddings are as noisy as the test images')
    # and never the test images
    keep = np.array([i not in encoder_train and i not in set(exclude) for i in trials.image_ids])
    val_ids = sorted(set(trials.image_ids[keep].tolist()))
    pos = {image_id: k for k, image_id in enumerate(val_ids)}
    train_ids, _ = split_ids(list(gallery.ids), exclude, config.training.seed)
    bank_ids = [i for i in train_ids if i not in pos]
    embedder = get_embedder("demo", dim=config.embed_dim)
    recipe = config.training
    _, augmented = augmented_embeddings(
        [gallery.load_image(i) for i in bank_ids], embedder, config.height, recipe.augment_copies,
        recipe.seed, progress,
    )  # fmt: skip
    banks = {"images": gallery.embeddings_for(bank_ids), "augmented": augmented}
    prior, rows = select_prior(
        decoded[keep],
        [pos[i] for i in trials.image_ids[keep]],
        gallery.embeddings_for(val_ids),
        banks,
        generator,
        embedder.embed,
        space=space,
        progress=progress,
    )
    noise = estimate_embedding_noise(decoded[keep], gallery.embeddings_for(list(trials.image_ids[keep])))
    result = {
        "n_validation_images": len(val_ids),
        "n_validation_trials": int(keep.sum()),
        "bank_images": len(bank_ids),
        "embedding_noise": noise,
        "selection": rows,
    }
    if prior is None:
        print("no prior did better than none on validation: set prior: null in the config", flush=True)
        result["path"] = None
    else:
        info = {
            **result,
            "generator_fingerprint": read_metadata(config.weights)["info"].get("fingerprint"),
            "validation_design": VALIDATION_DESIGN,
        }
        result["path"] = str(prior.save(out, info))
        result |= {"bank": prior.bank_name, "k": prior.k, "temperature": prior.temperature}
    if args.json:
        print_json(result)
    else:
        for row in rows:
            setting = f"bank {row['bank']}, k {row['k']}, T {row['temperature']}"
            print(f"{setting}: 2-way {100 * row['two_way']:.1f} %")
        print(
            f"decoded embeddings on validation: signal {noise['signal']:.3f}, noise {noise['noise']:.4f} "
            "(the recipe's embedding_signal / embedding_noise)"
        )
        print(f"wrote {result['path']}")
    return 0
