"""The reconstruction table of ``brainstream evaluate --reconstruction`` for an encoder + a generator.

Rows (each scored by :func:`brainstream.models.reconstruction.score_reconstructions` against the test images):

- ``a_true_embedding``: images generated from the test images' own embeddings (the generator's ceiling);
- ``b_decoded_single_trial`` / ``b_decoded_averaged``: generated from the encoder's embeddings of held-out
  test trials, one per trial / one per image from the repetition-averaged windows;
- ``c_retrieval_single_trial`` / ``c_retrieval_averaged``: the top-1 image retrieved from the whole gallery
  for the same embeddings, scored the same way (the baseline a generator must beat to add anything);
- ``d_chance_shuffled``: the true-embedding reconstructions paired with other test images;
- with an embedding prior (:mod:`brainstream.models.generation.prior`), the (b) rows go through it, as live,
  and ``b_*_without_prior`` show the same trials generated without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def generate_all(generator, embeddings: np.ndarray, space: str, progress: bool = True, desc: str = ""):
    """One image per embedding row (progress bar)."""
    from tqdm.auto import tqdm

    return [
        generator.generate(e, space) for e in tqdm(embeddings, desc=desc, unit="img", disable=not progress)
    ]


def top1_retrieved(embeddings: np.ndarray, gallery) -> list[str]:
    """Id of the best gallery match (cosine) of each embedding row."""
    from brainstream.models.retrieval import ExactIndex

    _, idx = ExactIndex(gallery.embeddings).search(np.asarray(embeddings, np.float32), 1)
    return [gallery.ids[int(i)] for i in idx[:, 0]]


def evaluate_reconstruction(
    checkpoint: str | Path,
    paths: list[str] | str,
    generator,
    gallery,
    embedder,
    kind: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode the test trials of ``paths`` with ``checkpoint``, generate, retrieve and score (a)-(d).

    Parameters
    ----------
    checkpoint : path
        Encoder checkpoint folder (any encoder of the generator's space: the current demo encoder or another).
    paths : path(s)
        Recordings with test trials the encoder was not trained on.
    generator : Generator
        The generator (e.g. ``load_generator("demo")``).
    gallery : Gallery
        The gallery of the stimuli (images and embeddings; retrieval searches all of it).
    embedder : ImageEmbedder
        The embedder of the generator's space (2-way identification in that space).
    """
    from brainstream.models.reconstruction import reconstruction_table, shuffled

    test, single, avg, averaged, space = decode_test_trials(
        checkpoint, paths, (("generator", generator.space), ("gallery", gallery.space)), kind, progress
    )
    stim_ids = sorted(set(test.image_ids.tolist()))
    pos = {image_id: k for k, image_id in enumerate(stim_ids)}
    stimuli = [gallery.load_image(i) for i in stim_ids]
    true_single = [pos[i] for i in test.image_ids]
    true_avg = [pos[i] for i in avg.image_ids]
    # (a) is the generator's own ceiling: true embeddings need no prior
    base = getattr(generator, "base", generator)
    true_embeddings = gallery.embeddings_for(stim_ids)
    true_images = generate_all(base, true_embeddings, space, progress, "from true embeddings")
    single_images = generate_all(generator, single, space, progress, "from single trials")
    avg_images = generate_all(generator, averaged, space, progress, "from averaged trials")
    retrieved_single = [gallery.load_image(i) for i in top1_retrieved(single, gallery)]
    retrieved_avg = [gallery.load_image(i) for i in top1_retrieved(averaged, gallery)]
    size = true_images[0].shape[0]
    rows = {
        "a_true_embedding": (true_images, list(range(len(stim_ids)))),
        "b_decoded_single_trial": (single_images, true_single),
        "b_decoded_averaged": (avg_images, true_avg),
        "c_retrieval_single_trial": (_at(retrieved_single, size), true_single),
        "c_retrieval_averaged": (_at(retrieved_avg, size), true_avg),
        "d_chance_shuffled": (true_images, shuffled(range(len(stim_ids)), len(stim_ids), seed).tolist()),
    }
    if base is not generator:  # the same trials without the prior, to show what it adds
        rows["b_single_trial_without_prior"] = (
            generate_all(base, single, space, progress, "single trials, no prior"),
            true_single,
        )
        rows["b_averaged_without_prior"] = (
            generate_all(base, averaged, space, progress, "averaged trials, no prior"),
            true_avg,
        )
    table = reconstruction_table(rows, _at(stimuli, size), embedder.embed, n_boot, seed, progress)
    return {
        "table": table,
        "n_test_images": len(stim_ids),
        "n_test_trials": len(test.X),
        "gallery_size": len(gallery.ids),
        "space": space,
        "checkpoint": str(checkpoint),
        "prior": None
        if base is generator
        else {"bank": generator.prior.bank_name, "k": generator.prior.k, "t": generator.prior.temperature},
        "images": {
            "ids": stim_ids,
            "stimuli": _at(stimuli, size),
            "true": true_images,
            "single": [single_images[true_single.index(k)] for k in range(len(stim_ids))],
            "averaged": [avg_images[true_avg.index(k)] for k in range(len(stim_ids))],
        },
    }


def decode_test_trials(checkpoint, paths, spaces=(), kind: str = "auto", progress: bool = True):
    """Decode the test trials of ``paths`` with ``checkpoint`` as the live decoder would (its scaler).

    Returns ``(test data, single-trial embeddings, repetition-averaged data, their embeddings, space)``;
    ``spaces`` holds ``(what, space)`` pairs that must match the checkpoint's space.
    """
    from brainstream.models.checkpoint import CheckpointError, load_checkpoint
    from brainstream.models.preprocessing import RobustScaler
    from brainstream.models.training.data import DataError, average_repetitions
    from brainstream.models.training.loading import load_for_checkpoint
    from brainstream.models.training.scoring import SUBJECT_UNSEEN, predict

    model, meta = load_checkpoint(checkpoint)
    for what, space in spaces:
        if space is not None and space != meta.space:
            raise CheckpointError(
                f"embedding space mismatch: the checkpoint predicts {meta.space!r} but the {what} is in "
                f"{space!r}; use a {what} of the checkpoint's space"
            )
    # the checkpoint's scaler, as the live decoder applies it: a test-only recording has no training
    # trials to fit one on
    options = {"scaler": RobustScaler.from_dict(meta.scaler)} if meta.scaler else None
    data = load_for_checkpoint(meta, paths, kind=kind, progress=progress, options=options)
    meta.check_channels(data.ch_names)
    test = data.split("test")
    if len(np.unique(test.image_ids)) < 2:
        raise DataError("the recordings have fewer than 2 distinct test images: nothing to identify")
    index = {name: k for k, name in enumerate(meta.subjects)}
    subj = np.array([index.get(test.subject_names[s], SUBJECT_UNSEEN) for s in test.subjects])
    avg = average_repetitions(test)
    avg_subj = np.array([index.get(avg.subject_names[s], SUBJECT_UNSEEN) for s in avg.subjects])
    return test, predict(model, test.X, subj), avg, predict(model, avg.X, avg_subj), meta.space


def _at(images: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Images at the generator's size (retrieved thumbnails and stimuli are bigger)."""
    from brainstream.models.reconstruction import _resized

    if images and images[0].shape[0] == size:
        return images
    return list((_resized(images, size) * 255).round().astype(np.uint8))


def contact_sheet(report: dict[str, Any], path: str | Path, n: int = 12) -> Path:
    """PNG: for the first ``n`` test images, rows of the stimulus and its reconstructions from the true
    embedding, one single trial and the averaged trials."""
    from PIL import Image

    imgs = report["images"]
    n = min(n, len(imgs["ids"]))
    size = imgs["stimuli"][0].shape[0]
    rows = ("stimuli", "true", "single", "averaged")
    sheet = Image.new("RGB", (n * (size + 4), len(rows) * (size + 4)), "white")
    for k in range(n):
        for row, img in enumerate(imgs[name][k] for name in rows):
            sheet.paste(Image.fromarray(img), (k * (size + 4), row * (size + 4)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
