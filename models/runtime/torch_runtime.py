"""Torch eager runtime (CPU or GPU): the reference every other backend is compared against.

In fp32 it is that reference. ``precision="bf16"`` runs the weights and activations in bfloat16: on CPUs with
AVX512-BF16 or AMX, oneDNN's bf16 convolutions do about 2.7× the fp32 arithmetic per second, which is what
batched offline encoding needs. bfloat16 keeps 8 mantissa bits (fp16 keeps 11), so outputs move more than
TensorRT fp16's: on the full-size brain module (random weights, preprocessed noise) every embedding kept a
cosine similarity of at least 0.997 with fp32 (what retrieval compares) and the largest element-wise
difference reached 7 % of the largest output. Use it where that is acceptable, and fp32 where exactness is.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from brainstream.models.runtime.base import EncoderRuntime, EncoderSignature, signature_of
from brainstream.models.runtime.precision import check_precision

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ReducedPrecision(nn.Module):
    """A copy of ``model`` in ``dtype`` that takes and returns fp32 tensors (callers stay unchanged)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = copy.deepcopy(model).to(dtype)
        self.dtype = dtype
        self.config = getattr(model, "config", None)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x.to(self.dtype), subject).float()


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` itself for fp32, else a :class:`ReducedPrecision` copy; the caller's module is untouched."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return model if precision == "fp32" else ReducedPrecision(model, PRECISIONS[precision])


class TorchRuntime(EncoderRuntime):
    """Run an ``nn.Module`` in eval mode under ``torch.inference_mode``.

    Parameters
    ----------
    model : nn.Module
        Encoder ``(batch, ch, T) [, subject] -> (batch, D)``.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    signature : EncoderSignature | None
        Read from ``model.config`` when None.
    precision : str
        ``"fp32"`` (the reference), ``"bf16"`` (a GPU, or a CPU with native bf16 units: see
        :mod:`models.runtime.precision`) or ``"fp16"`` (GPU only); a precision the device cannot run natively
        is refused with what to use instead. Reduced precisions run a copy of the model; the caller's module
        is left in fp32.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        signature: EncoderSignature | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(signature or signature_of(model))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
        if precision in PRECISIONS:  # an unknown name gets with_precision's error
            check_precision(precision, device)
        self.device = torch.device(device)
        self.precision = precision
        self.model = with_precision(model, precision).eval().to(self.device)

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device, non_blocking=True)
            if subject is None:
                out = self.model(xt)
            else:
                out = self.model(xt, torch.from_numpy(subject).to(self.device))
            return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {
            **super().describe(),
            "device": str(self.device),
            "precision": self.precision,
            "threads": torch.get_num_threads(),
        }
