"""The generator interface: one embedding in, one ``(H, W, 3)`` uint8 image out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class GeneratorError(ValueError):
    """An embedding the generator cannot take (wrong space, size or values)."""


class Generator(ABC):
    """Turn an image embedding into an image.

    Attributes
    ----------
    space : str | None
        Embedding space accepted (None: any space of size ``dim``; test generators only).
    dim : int
        Embedding size.
    height, width : int
        Output image size.
    """

    space: str | None
    dim: int
    height: int
    width: int

    def check_embedding(self, embedding: np.ndarray, space: str | None = None) -> np.ndarray:
        """Validate one embedding: the space (when both are named), shape ``(dim,)`` and finite values."""
        if self.space is not None and space is not None and space != self.space:
            raise GeneratorError(
                f"embedding space mismatch: the generator takes {self.space!r} but the embedding is in "
                f"{space!r}; use a generator config for the encoder's space"
            )
        emb = np.asarray(embedding, dtype=np.float32)
        if emb.shape != (self.dim,):
            raise GeneratorError(f"expected an embedding of shape ({self.dim},), got {emb.shape}")
        if not np.all(np.isfinite(emb)):
            raise GeneratorError("the embedding contains NaN or Inf")
        return emb

    @abstractmethod
    def generate(self, embedding: np.ndarray, space: str | None = None) -> np.ndarray:
        """One image ``(height, width, 3)`` uint8 for one ``(dim,)`` embedding."""

    def warmup(self, n: int = 2) -> None:
        """Run a few generations so lazy initialisation and compilation happen before live use."""
        rng = np.random.default_rng(0)
        for _ in range(n):
            self.generate(rng.standard_normal(self.dim).astype(np.float32), self.space)
