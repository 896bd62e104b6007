"""What the embedded demo needs besides code: the demo gallery and an encoder trained for its virtual subject.

Two encoders ship with the package: ``demo`` (``assets/demo_encoder``, the event-locked demo) and
``demo-causal`` (``assets/demo_encoder_causal``, ``configs/training/demo_meg_causal.yaml``: the same brain
module with causal convs, which the continuous demo decodes incrementally, stride by stride). A pipeline
names one as its ``encoder.checkpoint``. Each ``model.yaml`` records the fingerprint of
the data it was trained on (subject seed, SNR, gallery space and size, design, training recipe). When the
current code would simulate something else, the demo trains a fresh encoder once (a simulated session of
that subject, then the ``configs/training/demo_meg.yaml`` recipe: a few minutes on two cores, with progress
bars) and caches it under ``~/.cache/brainstream/``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from brainstream.models.cache import cache_root
from brainstream.models.config_base import resolve_config_path

logger = logging.getLogger(__name__)

DEMO_SUBJECT_SEED = 7
DEMO_PROFILE = "ctf275_things_meg"
ASSETS = Path(__file__).resolve().parent / "assets"
#: the demo encoders a pipeline may name as its checkpoint: name -> (training config, shipped folder)
DEMO_ENCODERS = {
    "demo": ("demo_meg", ASSETS / "demo_encoder"),
    "demo-causal": ("demo_meg_causal", ASSETS / "demo_encoder_causal"),
}
DEMO_TRAINING_CONFIG = resolve_config_path(DEMO_ENCODERS["demo"][0], "training")
SHIPPED_ENCODER = DEMO_ENCODERS["demo"][1]
# the offline session the encoder learns from; the live demo shows the same test images (zero-shot)
# the code that decides what the virtual subject's brain does; any change means retraining the demo encoder
SIMULATOR_SOURCES = ("subject.py", "responses.py", "background.py", "forward.py")
DEMO_DESIGN = {"n_train_images": 600, "n_test_images": 50, "test_repeats": 4, "design_seed": 0}
# the demo's generator (trained on the gallery minus the demo test images: independent of the encoder)
DEMO_GENERATOR_CONFIG = "demo"
SHIPPED_GENERATOR = Path(__file__).resolve().parent / "assets" / "demo_generator" / "generator.safetensors"


def demo_test_image_ids(gallery_ids: list[str]) -> list[str]:
    """The demo session's test images (the same for every virtual subject of the demo design)."""
    from brainstream.realtime.simulation.offline import RSVPDesign, make_rsvp_schedule

    trials = make_rsvp_schedule(gallery_ids, RSVPDesign(**DEMO_DESIGN))
    return sorted({t.image_id for t in trials if t.split == "test"})


@dataclass(frozen=True)
class DemoAssets:
    gallery_dir: Path
    checkpoint_dir: Path
    subject_seed: int
    fingerprint: str


def demo_generator_data(gallery) -> tuple[list[str], str]:
    """What the demo generator is trained without and the data version in its fingerprint:
    ``(excluded test image ids, data version)``."""
    from brainstream.models.stimuli import STIMULI_VERSION

    return demo_test_image_ids(list(gallery.ids)), f"stimuli-{STIMULI_VERSION}:{gallery.space}"


def demo_generator_fingerprint(config, gallery) -> str:
    """The fingerprint ``brainstream generator train --config demo`` would give weights trained now."""
    from brainstream.models.generation.training import generator_fingerprint, split_ids

    exclude, data_version = demo_generator_data(gallery)
    train_ids, _ = split_ids(list(gallery.ids), exclude, config.training.seed)
    return generator_fingerprint(config, train_ids, data_version)


def demo_test_recording(assets: DemoAssets, progress: bool = True) -> Path:
    """The demo subject watching only the demo test images (4 repetitions each): held-out trials for
    evaluating the demo encoder and generator, simulated once and cached (~400 MB)."""
    return demo_session_recording(assets, {**DEMO_DESIGN, "n_train_images": 0}, "test", progress)


def demo_session_recording(assets: DemoAssets, design: dict, name: str, progress: bool = True) -> Path:
    """The demo subject watching ``design`` (an :class:`RSVPDesign`'s fields), simulated once and cached
    under ``demo-<name>-session-<key>_raw.fif`` (the key: the demo fingerprint and the design)."""
    from brainstream.models.cache import file_lock
    from brainstream.realtime.simulation.offline import RSVPDesign, simulate_recording

    key = hashlib.sha256(json.dumps([assets.fingerprint, design], sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"demo-{name}-session-{key}_raw.fif"
    with file_lock(cache_root() / f".demo-{name}-session-{key}.lock"):
        if not out.is_file():
            print(f"simulating the demo subject's {name} session into {out} ...", flush=True)
            tmp = out.with_name(f".tmp-{out.name}")
            simulate_recording(
                tmp,
                profile=DEMO_PROFILE,
                gallery=assets.gallery_dir,
                seed=assets.subject_seed,
                design=RSVPDesign(**design),
                overwrite=True,
                progress=progress,
            )
            tmp.replace(out)
    return out


def demo_fingerprint(gallery, encoder: str = "demo") -> str:
    """A digest of everything a demo encoder's training data and recipe depend on."""
    from brainstream.realtime.simulation.responses import DEFAULT_SHARED_FRACTION
    from brainstream.realtime.simulation.subject import DEFAULT_SNR

    parts = {
        "simulator": simulator_fingerprint(),
        "profile": DEMO_PROFILE,
        "seed": DEMO_SUBJECT_SEED,
        "snr": DEFAULT_SNR,
        "shared_fraction": DEFAULT_SHARED_FRACTION,
        "space": gallery.space,
        "gallery": hashlib.sha256("\n".join(gallery.ids).encode()).hexdigest()[:16],
        "design": DEMO_DESIGN,
        "recipe": hashlib.sha256(_training_config(encoder).read_bytes()).hexdigest()[:16],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _training_config(encoder: str) -> Path:
    if encoder not in DEMO_ENCODERS:
        raise ValueError(
            f"unknown demo encoder {encoder!r}; the demo encoders are {', '.join(DEMO_ENCODERS)}"
        )
    return resolve_config_path(DEMO_ENCODERS[encoder][0], "training")


def simulator_fingerprint() -> str:
    """A digest of what the virtual subject's brain does: the simulator's code without imports, docstrings
    and comments (anything trained on simulated data is stale when it changes)."""
    sim_dir = Path(__file__).resolve().parents[1] / "simulation"
    simulator = hashlib.sha256()
    for name in SIMULATOR_SOURCES:
        simulator.update(_behaviour_of((sim_dir / name).read_text(encoding="utf-8")).encode())
    return simulator.hexdigest()[:16]


def _behaviour_of(source: str) -> str:
    """The code of a module without its imports, docstrings and comments: what the simulator does, so that
    moving a module or rewording a comment does not force retraining the demo encoder."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [
                s
                for i, s in enumerate(body)
                if not isinstance(s, ast.Import | ast.ImportFrom)
                and not (i == 0 and isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            ] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def _fingerprint_of(checkpoint_dir: Path) -> str | None:
    import yaml

    meta_file = checkpoint_dir / "model.yaml"
    if not meta_file.is_file():
        return None
    meta = yaml.safe_load(meta_file.read_text()) or {}
    return (meta.get("training") or {}).get("demo_fingerprint")


def build_demo_encoder(
    out_dir: Path, gallery_dir: Path, fingerprint: str, progress: bool = True, encoder: str = "demo"
) -> Path:
    """Simulate the demo subject's training session and train a demo encoder into ``out_dir``."""
    from brainstream.models.checkpoint import load_checkpoint, save_checkpoint
    from brainstream.models.training.config import load_training_config
    from brainstream.models.training.trainer import train
    from brainstream.realtime.simulation.offline import RSVPDesign, simulate_recording

    out_dir = Path(out_dir)
    work = out_dir.parent / f".{out_dir.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    fif = work / "demo_subject_raw.fif"
    if not fif.is_file():
        print(f"simulating the demo subject's training session into {fif} ...", flush=True)
        simulate_recording(
            fif,
            profile=DEMO_PROFILE,
            gallery=gallery_dir,
            seed=DEMO_SUBJECT_SEED,
            design=RSVPDesign(**DEMO_DESIGN),
            overwrite=True,
            progress=progress,
        )
    config = load_training_config(_training_config(encoder))
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"paths": [str(fif)], "gallery": str(gallery_dir)})}
    )
    print(f"training the {encoder} encoder ...", flush=True)
    result = train(config, out_dir=work / "trained", progress=progress)
    model, meta = load_checkpoint(work / "trained")
    training = {**meta.training, "demo_fingerprint": fingerprint, "demo_subject_seed": DEMO_SUBJECT_SEED}
    save_checkpoint(out_dir, model, meta.model_copy(update={"training": training}))
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=1, default=float))
    shutil.rmtree(work, ignore_errors=True)  # the simulated session is ~1.5 GB; keep only the checkpoint
    return out_dir


def ensure_demo_assets(progress: bool = True, encoder: str = "demo") -> DemoAssets:
    """The demo gallery (built on first use) and a demo encoder (``demo`` or ``demo-causal``) that matches
    it: shipped, cached or trained now."""
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.device_profile import load_device_profile
    from brainstream.models.gallery import Gallery
    from brainstream.realtime.simulation.forward import load_forward

    gallery_dir = Path(default_gallery_dir())
    # the virtual subject's forward model is computed once and cached; do it here, before any node waits
    # on the subject's stream with a timeout
    load_forward(load_device_profile(DEMO_PROFILE))
    fingerprint = demo_fingerprint(Gallery.load(gallery_dir), encoder)
    shipped = DEMO_ENCODERS[encoder][1]
    if _fingerprint_of(shipped) == fingerprint:
        return DemoAssets(gallery_dir, shipped, DEMO_SUBJECT_SEED, fingerprint)
    cached = cache_root() / f"{encoder}-encoder-{fingerprint}"
    if _fingerprint_of(cached) != fingerprint:
        logger.warning(
            "the shipped %s encoder does not match this simulator/gallery; training one (cached)", encoder
        )
        build_demo_encoder(cached, gallery_dir, fingerprint, progress=progress, encoder=encoder)
    return DemoAssets(gallery_dir, cached, DEMO_SUBJECT_SEED, fingerprint)


def main(argv: list[str] | None = None) -> int:
    """``python -m brainstream.realtime.session.demo_assets --ship``: rebuild the shipped encoder for the
    current code."""
    import argparse

    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--ship", action="store_true", help="write the result into the package assets")
    parser.add_argument("--out", default=None, help="folder to train into (default: the cache)")
    parser.add_argument("--encoder", default="demo", choices=sorted(DEMO_ENCODERS), help="which one")
    args = parser.parse_args(argv)
    gallery_dir = Path(default_gallery_dir())
    fingerprint = demo_fingerprint(Gallery.load(gallery_dir), args.encoder)
    out = Path(args.out) if args.out else cache_root() / f"{args.encoder}-encoder-{fingerprint}"
    if _fingerprint_of(out) != fingerprint:
        build_demo_encoder(out, gallery_dir, fingerprint, encoder=args.encoder)
    if args.ship:
        shipped = DEMO_ENCODERS[args.encoder][1]
        shutil.rmtree(shipped, ignore_errors=True)
        shipped.mkdir(parents=True)
        for name in ("model.safetensors", "model.yaml", "metrics.json"):
            shutil.copy2(out / name, shipped / name)
        print(f"shipped {out} as {shipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
