"""Image embedders: images → L2-normalised vectors in a named embedding space (docs/architecture.md §6).

An embedder declares its ``space`` (e.g. ``demo:randconv-v1:128`` or ``openclip:ViT-H-14:laion2b_s32b_b79k``);
galleries, checkpoints and generators record it and refuse to mix spaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

EMBEDDERS = ("demo", "clip")


@runtime_checkable
class ImageEmbedder(Protocol):
    """Maps RGB images to L2-normalised embeddings of one space."""

    space: str
    dim: int

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``images``: list of ``(H, W, 3)`` uint8 arrays → ``(n, dim)`` float32, rows of unit norm."""
        ...


def get_embedder(name: str, **kwargs: Any) -> ImageEmbedder:
    """Create an embedder by name: ``"demo"`` (no weights) or ``"clip"`` (a local CLIP vision tower).

    ``kwargs`` go to the implementation: ``DemoEmbedder(dim=128)``, ``ClipEmbedder(model_dir, space=...)``.
    """
    if name == "demo":
        from brainstream.models.embedders.demo import DemoEmbedder

        return DemoEmbedder(**kwargs)
    if name == "clip":
        from brainstream.models.embedders.clip import ClipEmbedder

        return ClipEmbedder(**kwargs)
    raise ValueError(f"unknown embedder {name!r}; expected one of {EMBEDDERS}")


def space_of(name: str, **kwargs: Any) -> str:
    """The space id an embedder would declare, without building it when that is cheap (the demo)."""
    if name == "demo":
        from brainstream.models.embedders.demo import demo_space

        return demo_space(kwargs.get("dim", 128))
    return get_embedder(name, **kwargs).space


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a batch: each must be ``(H, W, 3)`` uint8; the error says which one is wrong and how."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError("expected a list of images (or an (n, H, W, 3) array), got a single (H, W, 3) array")
    out = []
    for i, image in enumerate(images):
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(
                f"image {i}: expected an (H, W, 3) uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}; "
                "convert with models.stimuli.to_rgb_uint8"
            )
        if arr.shape[0] < 8 or arr.shape[1] < 8:
            raise ValueError(f"image {i}: {arr.shape[0]}x{arr.shape[1]} px is too small (at least 8x8)")
        out.append(arr)
    return out


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)).astype(np.float32)


def embed_images(
    embedder: ImageEmbedder,
    images: Sequence[np.ndarray],
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "embedding images",
) -> np.ndarray:
    """Embed many images in batches with a progress bar; returns ``(n, dim)`` float32."""
    from tqdm.auto import tqdm

    n = len(images)
    out = np.empty((n, embedder.dim), dtype=np.float32)
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = list(images[start : start + batch_size])
            out[start : start + len(batch)] = embedder.embed(batch)
            bar.update(len(batch))
    return out
