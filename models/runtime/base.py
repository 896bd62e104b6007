"""The one interface every encoder backend implements: ``(batch, ch, T) float32 → (batch, D) float32``."""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSignature:
    """Input/output shape of an encoder: ``(batch, n_channels, n_times)`` → ``(batch, dim)``.

    ``n_subjects > 1`` means the model takes a subject index (its subject layer); with one subject the
    index is not needed.
    """

    n_channels: int
    n_times: int
    dim: int
    n_subjects: int = 1

    @property
    def with_subject(self) -> bool:
        return self.n_subjects > 1

    def to_dict(self) -> dict[str, int]:
        return {
            "n_channels": self.n_channels,
            "n_times": self.n_times,
            "dim": self.dim,
            "n_subjects": self.n_subjects,
        }


def signature_of(model: Any, n_channels: int | None = None, n_times: int | None = None) -> EncoderSignature:
    """Read the signature from an encoder's ``config`` (``n_channels``, ``n_times``, ``dim``,
    ``n_subjects``); explicit arguments win, ``dim`` falls back to a dry run."""
    cfg = getattr(model, "config", None)
    n_ch = n_channels if n_channels is not None else getattr(cfg, "n_channels", None)
    n_t = n_times if n_times is not None else getattr(cfg, "n_times", None)
    if n_ch is None or n_t is None:
        raise ValueError(
            "cannot tell the encoder's input shape: pass n_channels and n_times (the model has no "
            "config.n_channels / config.n_times)"
        )
    dim = getattr(cfg, "dim", None)
    if dim is None:
        import torch

        with torch.inference_mode():
            dim = int(model(torch.zeros(1, n_ch, n_t)).shape[-1])
    return EncoderSignature(int(n_ch), int(n_t), int(dim), int(getattr(cfg, "n_subjects", 1) or 1))


def weights_digest(model: Any) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes, bytes) and of its causal flag: identifies
    exported artefacts."""
    h = hashlib.sha256()
    if getattr(getattr(model, "config", None), "causal", False):
        # a causal brain module has the state-dict layout of a padded one but computes another function
        h.update(b"causal:")
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # numpy has no bfloat16: hash its float32 widening
        h.update((t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy().tobytes())
    return h.hexdigest()


class EncoderRuntime(ABC):
    """An encoder ready to run: ``run(x (batch, ch, T) float32, subject=None) -> (batch, D) float32``.

    Subclasses implement :meth:`_run` on validated input. ``subject`` is an int or an int array (batch,);
    it is required when the model has several subject layers, and ignored (must be None or 0) otherwise.
    """

    name: str = "base"
    default_subject: int = 0  # subject index used by warmup()

    def __init__(self, signature: EncoderSignature) -> None:
        self.signature = signature
        self.n_runs = 0

    # ------------------------------------------------------------------------------------------ run
    def run(self, x: np.ndarray, subject: int | np.ndarray | None = None) -> np.ndarray:
        """Encode a batch of windows.

        Parameters
        ----------
        x : float32 array, shape (batch, n_channels, n_times)
        subject : int | int array (batch,) | None
            Subject-layer index per window.

        Returns
        -------
        float32 array, shape (batch, dim)
        """
        x = self._check_x(x)
        subj = self._check_subject(subject, x.shape[0])
        out = self._run(x, subj)
        self.n_runs += 1
        return out

    @abstractmethod
    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray: ...

    def warmup(self, n: int = 3, batch: int = 1) -> float:
        """Run ``n`` zero batches (allocations, lazy compilation, CUDA graphs); returns the last time in s."""
        sig = self.signature
        x = np.zeros((batch, sig.n_channels, sig.n_times), np.float32)
        subj = np.full(batch, self.default_subject, np.int64) if sig.with_subject else None
        dt = 0.0
        for _ in range(max(1, n)):
            t0 = time.perf_counter()
            self.run(x, subj)
            dt = time.perf_counter() - t0
        return dt

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release sessions / device memory."""

    def describe(self) -> dict[str, Any]:
        """What runs where (logged at start, put in status messages)."""
        return {"runtime": self.name, **self.signature.to_dict()}

    def __enter__(self) -> EncoderRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- checks
    def _check_x(self, x: np.ndarray) -> np.ndarray:
        sig = self.signature
        x = np.asarray(x)
        if x.ndim == 2:
            raise ValueError(
                f"expected a batch (batch, {sig.n_channels}, {sig.n_times}), got one window {x.shape}; "
                "use x[None] for a single window"
            )
        if x.ndim != 3 or x.shape[1:] != (sig.n_channels, sig.n_times):
            raise ValueError(
                f"expected windows of shape (batch, {sig.n_channels} channels, {sig.n_times} samples), got "
                f"{x.shape}; check the checkpoint's channels and window length"
            )
        if x.shape[0] < 1:
            raise ValueError("empty batch: nothing to encode")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _check_subject(self, subject: int | np.ndarray | None, batch: int) -> np.ndarray | None:
        sig = self.signature
        if subject is None:
            if sig.with_subject:
                raise ValueError(
                    f"this encoder has {sig.n_subjects} subject layers: pass subject indices "
                    f"(0..{sig.n_subjects - 1})"
                )
            return None
        subj = np.broadcast_to(np.asarray(subject, dtype=np.int64), (batch,)).copy()
        if subj.min() < 0 or subj.max() >= sig.n_subjects:
            raise ValueError(
                f"subject index out of range 0..{sig.n_subjects - 1}: {np.unique(subj).tolist()}"
            )
        return subj if sig.with_subject else None
