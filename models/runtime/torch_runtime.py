"""Torch eager runtime (CPU or GPU): the reference every other backend is compared against."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.runtime.base import EncoderRuntime, EncoderSignature, signature_of


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
    """

    name = "torch"

    def __init__(
        self, model: nn.Module, device: str = "cpu", signature: EncoderSignature | None = None
    ) -> None:
        super().__init__(signature or signature_of(model))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device, non_blocking=True)
            if subject is None:
                out = self.model(xt)
            else:
                out = self.model(xt, torch.from_numpy(subject).to(self.device))
            return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device), "threads": torch.get_num_threads()}
