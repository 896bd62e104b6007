"""Reconstruction metrics (MindEye; Benchetrit et al.): how close generated images are to the seen ones.

- **2-way identification** in a feature space: a generated image is "correct" against another candidate
  image when its features correlate more with its own stimulus' than with the other's; the score of one
  reconstruction is the fraction of the other candidates it beats, averaged over reconstructions (chance
  50 %). Computed in three spaces: the demo embedding space (what the generator is conditioned on, so the
  figure the generator is trained to win), HOG (scikit-image: grey-level edge orientations on an 8-px grid,
  i.e. where the shape's outlines and the texture are; blind to colour) and a differently seeded random
  convnet (:func:`randconv_features`: the demo embedder's architecture with other weights and without its
  colour statistics or PCA, i.e. colour, texture and coarse layout read by filters the generator never saw).
- **PixCorr**: Pearson correlation of the pixels (RGB, generator size) of reconstruction and stimulus.
- **SSIM**: structural similarity of the grey-level images (Gaussian window, sigma 1.5, as MindEye).

Every figure comes with a 95 % bootstrap CI over reconstructions (:func:`bootstrap_ci`).
:func:`score_reconstructions` scores one set; :func:`reconstruction_table` the (a)-(d) table of
``brainstream evaluate --reconstruction``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

N_BOOTSTRAP = 1000
HOG_SIZE = 64
RANDCONV_SEED = 1234  # not the demo embedder's seed: an independent network
METRICS = ("two_way_embedding", "two_way_hog", "two_way_randconv", "pixcorr", "ssim")


# ------------------------------------------------------------------------------------------- features
def _resized(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``(n, size, size, 3)`` float in [0, 1] (antialiased, as the demo embedder resizes)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    batch = torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float() / 255.0
    if batch.shape[-1] != size or batch.shape[-2] != size:
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return batch.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2125, 0.7154, 0.0721])


def hog_features(images: Sequence[np.ndarray], size: int = HOG_SIZE) -> np.ndarray:
    """Histogram-of-oriented-gradients features ``(n, F)`` of the grey images at ``size`` px."""
    from skimage.feature import hog

    grey = _grey(_resized(images, size))
    return np.stack(
        [
            hog(g, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True)
            for g in grey
        ]
    ).astype(np.float32)


def randconv_features(images: Sequence[np.ndarray], seed: int = RANDCONV_SEED) -> np.ndarray:
    """Features ``(n, F)`` of a random convnet seeded differently from the demo embedder's: its rectified
    conv responses (global and 2x2-pooled), log-compressed as the embedder does, without its fixed colour
    blocks and PCA."""
    import torch

    from brainstream.models.embedders.demo import INPUT_SIZE, _RandConvNet

    x = torch.from_numpy(_resized(images, INPUT_SIZE)).permute(0, 3, 1, 2).float()
    feats = _RandConvNet(seed).features(x, colour_blocks=False).double().numpy()
    return np.log1p(np.maximum(feats, 0.0) * 10.0).astype(np.float32)


def _standardised(generated: np.ndarray, stimuli: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets z-scored per feature with the stimuli's mean and std, so that no feature dominates the
    correlation by its scale alone."""
    mean, std = stimuli.mean(axis=0), stimuli.std(axis=0) + 1e-6
    return (generated - mean) / std, (stimuli - mean) / std


# -------------------------------------------------------------------------------------------- metrics
def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def two_way_scores(generated: np.ndarray, candidates: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per reconstruction, the fraction of other candidates whose features correlate less with it than
    its own stimulus' do.

    Parameters
    ----------
    generated : (n, F) features of the reconstructions
    candidates : (m, F) features of the distinct stimuli (m >= 2)
    true : (n,) row of ``candidates`` each reconstruction should match
    """
    if len(candidates) < 2:
        raise ValueError("2-way identification needs at least 2 distinct stimuli")
    corr = _zscore_rows(generated) @ _zscore_rows(candidates).T
    own = corr[np.arange(len(corr)), true]
    beaten = (corr < own[:, None]).sum(axis=1)  # the own column never counts (not strictly less)
    return beaten / (len(candidates) - 1)


def pixcorr_scores(generated: Sequence[np.ndarray], seen: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Pearson correlation of RGB pixels, per pair (both at ``size`` px)."""
    a = _resized(generated, size).reshape(len(generated), -1)
    b = _resized(seen, size).reshape(len(seen), -1)
    return np.sum(_zscore_rows(a) * _zscore_rows(b), axis=1)


def ssim_scores(generated: Sequence[np.ndarray], seen: Sequence[np.ndarray], size: int) -> np.ndarray:
    """SSIM of the grey images, per pair (Gaussian weights, sigma 1.5)."""
    from skimage.metrics import structural_similarity

    a, b = _grey(_resized(generated, size)), _grey(_resized(seen, size))
    return np.array(
        [
            structural_similarity(
                x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for x, y in zip(a, b, strict=True)
        ]
    )


def bootstrap_ci(
    scores: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of per-item ``scores`` with a percentile bootstrap CI (items resampled with replacement)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no scores to summarise")
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, len(scores), size=(n_boot, len(scores)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": float(scores.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(scores))}


# -------------------------------------------------------------------------------------------- scoring
def score_reconstructions(
    generated: Sequence[np.ndarray],
    true: Sequence[int],
    stimuli: Sequence[np.ndarray],
    embed: Callable[[Sequence[np.ndarray]], np.ndarray],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """2-way identification (embedding space, HOG, random convnet), PixCorr and SSIM with bootstrap CIs.

    Parameters
    ----------
    generated : sequence of (H, W, 3) uint8
        Reconstructions (or retrieved images), one per trial.
    true : sequence of int
        Index into ``stimuli`` of the image each trial showed.
    stimuli : sequence of (H, W, 3) uint8
        The distinct candidate images (the test images), at least 2.
    embed : callable
        Images → embeddings of the space the generator is conditioned on (e.g. ``DemoEmbedder.embed``).
    """
    true = np.asarray(true, dtype=np.int64)
    if len(generated) != len(true) or len(generated) == 0:
        raise ValueError(f"need one true index per reconstruction, got {len(generated)} and {len(true)}")
    size = int(np.asarray(generated[0]).shape[0])
    seen = [stimuli[k] for k in true]
    rows = {
        "two_way_embedding": two_way_scores(embed(generated), embed(stimuli), true),
        "two_way_hog": two_way_scores(hog_features(generated), hog_features(stimuli), true),
        "two_way_randconv": two_way_scores(
            *_standardised(randconv_features(generated), randconv_features(stimuli)), true
        ),
        "pixcorr": pixcorr_scores(generated, seen, size),
        "ssim": ssim_scores(generated, seen, size),
    }
    return {k: bootstrap_ci(v, n_boot, seed) for k, v in rows.items()}


def shuffled(true: Sequence[int], n_stimuli: int, seed: int = 0) -> np.ndarray:
    """Each trial paired with a different, random stimulus (the chance row)."""
    true = np.asarray(true, dtype=np.int64)
    rng = np.random.default_rng([seed, 31])
    shift = rng.integers(1, n_stimuli, size=len(true))
    return (true + shift) % n_stimuli


def reconstruction_table(
    rows: dict[str, tuple[Sequence[np.ndarray], Sequence[int]]],
    stimuli: Sequence[np.ndarray],
    embed: Callable[[Sequence[np.ndarray]], np.ndarray],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score several sets of images against the same stimuli: ``{row name: metrics}``.

    ``rows`` maps a name (e.g. ``"a_true_embedding"``) to ``(images, true indices)``.
    """
    from tqdm.auto import tqdm

    return {
        name: score_reconstructions(images, true, stimuli, embed, n_boot, seed)
        for name, (images, true) in tqdm(rows.items(), desc="scoring reconstructions", disable=not progress)
    }


def format_table(table: dict[str, Any]) -> str:
    """The table as aligned text: one row per set, mean [95 % CI] per metric (percent for 2-way)."""
    cols = METRICS
    titles = ("2-way (embedding)", "2-way (HOG)", "2-way (rand-conv)", "PixCorr", "SSIM")
    head = f"{'':34s}" + "".join(f"{c:>24s}" for c in titles)
    lines = [head]
    for name, metrics in table.items():
        cells = []
        for c in cols:
            m = metrics[c]
            k = 100.0 if c.startswith("two_way") else 1.0
            fmt = "{:.1f}" if k == 100.0 else "{:.3f}"
            cells.append(
                f"{fmt.format(k * m['mean'])} [{fmt.format(k * m['ci_low'])}, {fmt.format(k * m['ci_high'])}]"
            )
        lines.append(f"{name:34s}" + "".join(f"{c:>24s}" for c in cells))
    return "\n".join(lines)
