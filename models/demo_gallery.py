"""The demo gallery: the demo stimulus set (:mod:`brainstream.models.stimuli`) embedded and saved as a gallery
folder, cached under the user's cache folder and built on first use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from brainstream.models.cache import cache_root, file_lock
from brainstream.models.stimuli import STIMULI_VERSION, demo_stimuli


def build_demo_gallery(
    out_dir: str | Path,
    n_procedural: int = 1000,
    seed: int = 0,
    embedder: str = "demo",
    progress: bool = True,
    **embedder_kwargs,
):
    """Render the demo stimulus set, embed it and save it as a gallery folder.

    Parameters
    ----------
    out_dir : path
        Gallery folder to create (must not exist or be empty).
    n_procedural : int
        Number of procedural images (the natural ones are added to these).
    seed : int
        Seed of the procedural set; the same seed gives the same images.
    embedder : str
        Name for :func:`models.embedders.get_embedder`; ``embedder_kwargs`` are passed on.
    progress : bool
        Show a progress bar while embedding.

    Returns
    -------
    gallery : models.gallery.Gallery
    """
    from brainstream.models.embedders import embed_images, get_embedder
    from brainstream.models.gallery import Gallery

    ids, images, attributes = demo_stimuli(n_procedural, seed)
    model = get_embedder(embedder, **embedder_kwargs)
    embeddings = embed_images(model, images, progress=progress, desc="embedding demo stimuli")
    gallery = Gallery.save(
        out_dir,
        embeddings=embeddings,
        ids=ids,
        space=model.space,
        embedder=embedder,
        images=images,
        extra={"stimuli": {"version": STIMULI_VERSION, "n_procedural": n_procedural, "seed": seed}},
        progress=progress,
    )
    (Path(out_dir) / "stimuli.json").write_text(json.dumps(attributes, indent=0), encoding="utf-8")
    return gallery


def default_gallery_dir(
    n_procedural: int = 1000, seed: int = 0, embedder: str = "demo", build: bool = True
) -> Path:
    """The cached demo gallery folder, built on first use (atomically; safe across processes).

    The folder name carries a hash of everything that defines its content (stimuli version, count, seed,
    embedder space), so a change never reuses a stale cache.
    """
    from brainstream.models.embedders import space_of

    key = json.dumps(
        {"stimuli": STIMULI_VERSION, "n": n_procedural, "seed": seed, "space": space_of(embedder)},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    target = cache_root() / f"gallery-demo-{digest}"
    if (target / "gallery.yaml").is_file() or not build:
        return target
    with file_lock(cache_root() / f".gallery-demo-{digest}.lock"):
        if (target / "gallery.yaml").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".gallery-demo-{digest}-", dir=cache_root()))
        try:
            build_demo_gallery(tmp / "gallery", n_procedural=n_procedural, seed=seed, embedder=embedder)
            if target.exists():  # a half-built folder from a crash before the lock existed
                shutil.rmtree(target)
            os.replace(tmp / "gallery", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
