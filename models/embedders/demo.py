"""The demo embedder: a fixed, seeded random-feature convnet that needs no weights.

Random convolutional features already carry colour, texture, shape and position. To turn them into a usable
space (similar images close, different images spread over the sphere instead of crowded in one cone), the
features are standardised and projected on their principal axes, fitted once on a fixed calibration set of
procedural images (seed ``CALIBRATION_SEED``). Everything is seeded, so the space is the same on every run;
``demo:randconv-v1:<dim>`` names it, and the version changes whenever the network or calibration changes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from brainstream.models.embedders import check_images, l2_normalise

VERSION = "randconv-v1"
INPUT_SIZE = 64
WEIGHT_SEED = 20240611
CALIBRATION_SEED = 987_654
N_CALIBRATION = 512
MAX_DIM = 256


def demo_space(dim: int) -> str:
    return f"demo:{VERSION}:{int(dim)}"


class _RandConvNet:
    """Three conv stages with rectification (|x|) and average pooling; weights drawn from a fixed seed
    (another ``seed`` gives another network: the reconstruction metrics' independent feature space)."""

    widths = (48, 96, 128)
    kernels = (7, 3, 3)

    def __init__(self, seed: int = WEIGHT_SEED) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.weights = []
        c_in = 3
        for width, k in zip(self.widths, self.kernels, strict=True):
            w = torch.randn(width, c_in, k, k, generator=gen)
            # a third of the first-stage filters are smooth colour detectors, the rest zero-mean edge/texture
            # detectors: the first carry colour, the others orientation and spatial frequency
            if c_in == 3:
                w[width // 3 :] -= w[width // 3 :].mean(dim=(2, 3), keepdim=True)
                smooth = torch.exp(-((torch.arange(k) - k // 2) ** 2) / (k / 2) ** 2)
                w[: width // 3] = w[: width // 3].mean(dim=(2, 3), keepdim=True) * torch.outer(smooth, smooth)
            w /= w.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None, None]
            self.weights.append(w)
            c_in = width

    def features(self, x: torch.Tensor, colour_blocks: bool = True) -> torch.Tensor:
        """``x``: (n, 3, 64, 64) in [0, 1] → (n, n_features) raw features (``colour_blocks=False``: the
        convolutional ones only, without the fixed colour statistics). Differentiable: call it under
        ``torch.no_grad()`` unless a loss needs its gradient."""
        n = x.shape[0]
        blocks = []
        if colour_blocks:
            blocks += [
                x.mean(dim=(2, 3)),  # mean colour
                x.std(dim=(2, 3)),  # colour contrast
                F.adaptive_avg_pool2d(x, 4).flatten(1),  # where the colours are (4x4 grid)
            ]
        h = x - 0.5
        for i, w in enumerate(self.weights):
            h = torch.abs(F.conv2d(h, w, padding=w.shape[-1] // 2, stride=2 if i == 0 else 1))
            h = F.avg_pool2d(h, 2)
            blocks.append(h.mean(dim=(2, 3)))
            if i >= 1:
                blocks.append(F.adaptive_avg_pool2d(h, 2).flatten(1))  # coarse position of parts
        return torch.cat([b.reshape(n, -1) for b in blocks], dim=1)


@functools.lru_cache(maxsize=1)
def _network() -> _RandConvNet:
    return _RandConvNet()


def _to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Images → (n, 3, 64, 64) float in [0, 1]; same-sized images are resized in one call."""
    out = torch.empty(len(images), 3, INPUT_SIZE, INPUT_SIZE)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for shape, rows in by_shape.items():
        batch = torch.from_numpy(np.stack([images[i] for i in rows])).permute(0, 3, 1, 2).float() / 255.0
        if shape[:2] != (INPUT_SIZE, INPUT_SIZE):
            batch = F.interpolate(
                batch, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False
            )
        out[rows] = batch
    return out


def _compressed(features: torch.Tensor) -> torch.Tensor:
    """Raw features in float64, heavy-tailed rectified responses compressed."""
    return torch.log1p(features.double().clamp_min(0.0) * 10.0)


def _raw_features(images: Sequence[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return _compressed(_network().features(_to_tensor(images))).numpy()


@functools.lru_cache(maxsize=1)
def _calibration_full() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, scale and the first ``MAX_DIM`` principal axes, fitted on the fixed calibration set."""
    from brainstream.models.stimuli import procedural_images

    images = [img for _, img, _ in procedural_images(N_CALIBRATION, seed=CALIBRATION_SEED, size=INPUT_SIZE)]
    feats = _raw_features(images)
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0) + 1e-3
    z = (feats - mean) / scale
    # principal axes from the small (n_images x n_images) Gram matrix: far cheaper than a decomposition of
    # the (n_features x n_features) covariance, and robust to an oversubscribed multithreaded BLAS
    gram_evals, gram_evecs = np.linalg.eigh(z @ z.T)
    order = np.argsort(gram_evals)[::-1][:MAX_DIM]
    sing = np.sqrt(np.maximum(gram_evals[order], 1e-12))
    evecs = (z.T @ gram_evecs[:, order]) / sing[None, :]
    evals = np.maximum(sing**2 / (len(z) - 1), 1e-9)
    # eigenvector signs are arbitrary: fix them so the space does not depend on the LAPACK build
    signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(MAX_DIM)])
    evecs = evecs * signs
    # half-whitening: spreads the embeddings over more directions while keeping the strong (meaningful)
    # axes stronger than the weak, noisy ones
    projection = evecs * evals[None, :] ** -0.25
    return mean, scale, projection


def _calibration(dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, scale and projection (n_features, dim): principal axes are nested, so every size is a slice
    of one fit (fitted once per process)."""
    mean, scale, projection = _calibration_full()
    return mean, scale, projection[:, :dim]


class DemoEmbedder:
    """Seeded random-feature convnet + fixed PCA projection, ``dim`` in [8, 256]."""

    name = "demo"

    def __init__(self, dim: int = 128) -> None:
        if not 8 <= int(dim) <= MAX_DIM:
            raise ValueError(f"demo embedder dim must be between 8 and {MAX_DIM}, got {dim}")
        self.dim = int(dim)
        self.space = demo_space(self.dim)
        self._mean, self._scale, self._projection = _calibration(self.dim)
        self._tensors = tuple(torch.from_numpy(a) for a in (self._mean, self._scale, self._projection))

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(H, W, 3)`` uint8 images → ``(n, dim)`` float32, L2-normalised."""
        images = check_images(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.no_grad():
            return l2_normalise(self.embed_tensor(_to_tensor(images)).numpy())

    def embed_tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """Differentiable twin of :meth:`embed` for a generator's training loss: ``pixels`` (n, 3, 64, 64)
        float in [0, 1] → (n, dim) float32 unit-norm embeddings, gradients flowing back to the pixels."""
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"embed_tensor expects (n, 3, {INPUT_SIZE}, {INPUT_SIZE}) pixels, got {tuple(pixels.shape)}"
            )
        mean, scale, projection = self._tensors
        z = (_compressed(_network().features(pixels)) - mean) / scale
        return torch.nn.functional.normalize(z @ projection, dim=1).float()

    def __repr__(self) -> str:
        return f"DemoEmbedder(space={self.space!r})"
