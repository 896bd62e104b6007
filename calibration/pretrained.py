"""The pretrained multi-subject encoder that calibration adapts to a new person.

Here it is trained on simulated subjects (``protocol.pretrained.seeds``) — never on the subject being
calibrated: :func:`get_pretrained` refuses a new subject whose seed was used. Each pretraining subject sees
an RSVP session of training images drawn from the gallery WITHOUT the protocol's test images (so the
calibration test stays zero-shot for the shared trunk too), scaled with its own robust statistics, and gets
its own subject layer (MindBridge / See Through Their Minds: a shared trunk, shallow per-subject layers).

The result is cached under ``<cache>/pretrained/<protocol name>-<hash>/`` (``models.cache.cache_root``,
``~/.cache/brainstream`` by default); the hash covers everything that defines the model (the simulator's
behaviour included), so a changed recipe never reuses a stale cache. Building it shows progress bars and is
safe across processes. The encoder of a shipped protocol ships with the package
(``calibration/assets/pretrained/<name>-<hash>/``, written by ``python -m brainstream.calibration.pretrained
--ship NAME``) and is used when its hash matches, so a first calibration does not pretrain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.calibration.data import (
    SimTrial,
    cached_trials,
    epochs_from_filtered,
    simulate_filtered,
    timeline,
    to_encoding,
)
from brainstream.calibration.protocol import ProtocolConfig, split_images

logger = logging.getLogger(__name__)

INFO_FILE = "pretrained.json"


class PretrainedError(RuntimeError):
    """The pretrained encoder cannot be used for this subject (seed overlap, broken cache)."""


SHIPPED_DIR = Path(__file__).resolve().parent / "assets" / "pretrained"


def simulator_digest() -> str:
    """What a virtual subject's brain does (the simulator's code, as the demo encoder fingerprints it)."""
    from brainstream.realtime.session.demo_assets import simulator_fingerprint

    return simulator_fingerprint()


def simulation_key(config: ProtocolConfig, gallery: Any) -> dict[str, Any]:
    """What a simulated session of this protocol depends on (the simulator's code included)."""
    return {
        "simulator": simulator_digest(),
        "subject": config.subject.model_dump(mode="json"),
        "preprocessing": config.preprocessing.model_dump(mode="json"),
        "window": config.window.model_dump(mode="json"),
        "timing": [config.image_s, config.isi_s, config.isi_jitter_s],
        "test_images": sorted(split_images(config, list(gallery.ids))[0]),
        "space": gallery.space,
        "gallery": hashlib.sha256("\n".join(gallery.ids).encode()).hexdigest()[:16],
    }


def pretrained_key(config: ProtocolConfig, gallery: Any) -> str:
    """Hash of everything the pretrained model depends on (the simulator's code included)."""
    recipe = config.pretrained.model_dump(mode="json")
    if not recipe["augment"]:
        del recipe["augment"]  # the key of a recipe without augmentation is the one it had before the option
    key = {**simulation_key(config, gallery), "pretrained": recipe, "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def pretrained_dir(config: ProtocolConfig, gallery: Any, key: str | None = None) -> Path:
    from brainstream.models.cache import cache_root

    return cache_root() / "pretrained" / f"{config.name}-{key or pretrained_key(config, gallery)}"


def check_seed(config: ProtocolConfig, seed: int | None) -> None:
    if seed is not None and int(seed) in config.pretrained.seeds:
        raise PretrainedError(
            f"virtual subject seed {seed} was used to pretrain the encoder ( {config.pretrained.seeds}); "
            "a calibration must meet a NEW subject: choose another --virtual-subject seed"
        )


def _subject_session(config: ProtocolConfig, gallery: Any, seed: int) -> list[SimTrial]:
    test, _, _ = split_images(config, list(gallery.ids))
    test_set = set(test)
    pool = [i for i in gallery.ids if i not in test_set]
    rng = np.random.default_rng([seed, 31])
    n = min(config.pretrained.n_train_images, len(pool))
    train = [pool[k] for k in rng.choice(len(pool), n, replace=False)]
    items = [("train", i) for i in train] + [("test", i) for i in test]
    items = [items[k] for k in rng.permutation(len(items))]
    return timeline(items, config.image_s, config.isi_s, config.isi_jitter_s, seed)


def build_pretraining_data(
    config: ProtocolConfig, gallery: Any, progress: bool = True, session_cache: Path | None = None
):
    """Simulated sessions of every pretraining subject → one multi-subject ``EncodingData``.

    ``session_cache``: a folder where each subject's session is kept (:func:`calibration.data.cached_trials`),
    so that recipes compared on the same subjects simulate them once; None: nothing is kept.
    """
    from brainstream.models.device_profile import load_device_profile
    from brainstream.models.training.data import concatenate

    profile = load_device_profile(config.subject.profile)
    positions = profile.positions_2d
    sim_key = simulation_key(config, gallery) if session_cache is not None else {}
    parts = []
    for k, seed in enumerate(config.pretrained.seeds):

        def build(k: int = k, seed: int = seed):
            trials = _subject_session(config, gallery, seed)
            rec, _ = simulate_filtered(
                config.subject.profile, gallery, seed, trials, config.preprocessing, config.image_s,
                **config.subject.simulator_kwargs(), progress=progress,
                desc=f"pretraining subject {k + 1}/{len(config.pretrained.seeds)} (seed {seed})",
            )  # fmt: skip
            ds = epochs_from_filtered(
                [rec], config.preprocessing, config.window.tmin, config.window.tmax, gallery=gallery,
                subject=k, positions=positions, modality=profile.modality,
            )  # fmt: skip
            return to_encoding(ds, f"sim-{seed}")

        # the subject's index k only labels it: the same seed's trials serve any recipe it takes part in
        n_train = config.pretrained.n_train_images
        part = cached_trials(
            session_cache, {**sim_key, "session": "pretraining", "seed": seed, "n_train": n_train}, build
        )
        part.summary = {**part.summary, "subjects": [k]}
        parts.append(part)
    return concatenate(parts)


def training_config(config: ProtocolConfig, n_way: int):
    from brainstream.models.training.config import (
        AugmentConfig,
        DataConfig,
        EvaluationConfig,
        OptimConfig,
        SelectionConfig,
        TrainingConfig,
        WindowConfig,
    )

    p = config.pretrained
    return TrainingConfig(
        name=f"pretrained-{config.name}",
        seed=0,
        data=DataConfig(kind="simulated"),
        preprocessing=config.preprocessing,
        window=WindowConfig(tmin=config.window.tmin, tmax=config.window.tmax),
        model=p.model,
        optim=OptimConfig(lr=p.lr, batch_size=p.batch_size, max_epochs=p.max_epochs, patience=p.patience),
        augment=AugmentConfig(**p.augment),
        selection=SelectionConfig(val_fraction=0.1, lambdas=[1.0], metric="mean_rank"),
        evaluation=EvaluationConfig(n_way=n_way, ridge=False),
        device="cpu",
        num_threads=1,  # 2 shared cores: more threads spin and slow everyone down
    )


def get_pretrained(
    config: ProtocolConfig,
    gallery: Any,
    new_subject_seed: int | None = None,
    progress: bool = True,
    rebuild: bool = False,
    session_cache: Path | None = None,
) -> Path:
    """The pretrained checkpoint folder for ``config`` (built and cached on first use).

    ``session_cache``: see :func:`build_pretraining_data`. Raises :class:`PretrainedError` when
    ``new_subject_seed`` is one of the pretraining seeds.
    """
    from brainstream.models.cache import file_lock

    check_seed(config, new_subject_seed)
    key = pretrained_key(config, gallery)  # once: the simulator's sources may change while we train
    shipped = SHIPPED_DIR / f"{config.name}-{key}"
    if (shipped / INFO_FILE).is_file() and not rebuild:
        return shipped
    target = pretrained_dir(config, gallery, key)
    if (target / INFO_FILE).is_file() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / INFO_FILE).is_file() and not rebuild:
            return target
        t0 = time.perf_counter()
        if progress:
            print(
                f"pretraining the multi-subject encoder on simulated subjects {config.pretrained.seeds} "
                f"(once; cached in {target})",
                flush=True,
            )
        from brainstream.models.training.trainer import train

        recipe = training_config(config, config.n_way)  # a bad recipe fails here, before the simulation
        data = build_pretraining_data(config, gallery, progress, session_cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            result = train(recipe, tmp / "model", data=data, progress=progress)
            info = {
                "seeds": list(config.pretrained.seeds),
                "subjects": result.meta.subjects,
                "key": key,
                "n_trials": int(len(data.X)),
                "seconds": round(time.perf_counter() - t0, 1),
                "metrics": result.metrics,
            }
            (tmp / "model" / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp / "model", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_info(directory: Path) -> dict[str, Any]:
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        raise PretrainedError(f"{directory} is not a pretrained calibration encoder ({INFO_FILE} missing)")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m brainstream.calibration.pretrained --ship NAME``: build (or reuse) the protocol's encoder
    and ship it with the package, replacing an older shipped one of that protocol."""
    import argparse

    from brainstream.calibration.protocol import load_protocol
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--ship", required=True, metavar="NAME", help="calibration protocol (name or path)")
    args = parser.parse_args(argv)
    config = load_protocol(args.ship)
    gallery = Gallery.load(config.gallery or default_gallery_dir())  # as calibration.session does
    key = pretrained_key(config, gallery)
    built = pretrained_dir(config, gallery, key)
    if not (built / INFO_FILE).is_file():
        built = get_pretrained(config, gallery, progress=True)
    for old in SHIPPED_DIR.glob(f"{config.name}-*"):
        shutil.rmtree(old)
    target = SHIPPED_DIR / f"{config.name}-{key}"
    shutil.copytree(built, target, ignore=shutil.ignore_patterns(".*", "*.lock"))
    print(f"shipped {built} as {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
