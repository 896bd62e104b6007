"""``torch.compile`` backend: Inductor kernels; on a GPU ``mode="reduce-overhead"`` replays CUDA graphs."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from models.runtime.base import EncoderRuntime, EncoderSignature, signature_of

logger = logging.getLogger(__name__)


class CompileRuntime(EncoderRuntime):
    """Run ``torch.compile(model)``; the first calls compile (call :meth:`warmup` before going live).

    Parameters
    ----------
    model : nn.Module
    device : str
        ``"cpu"`` or ``"cuda[:i]"``.
    mode : str | None
        torch.compile mode; default ``"reduce-overhead"`` (CUDA graphs) on a GPU and ``"default"`` on CPU.
    dynamic : bool
        Compile for varying batch sizes (False: one graph per batch size, the fastest for batch 1).
    backend : str
        torch.compile backend; ``"inductor"`` generates kernels (C++ on CPU, Triton on GPU).
    """

    name = "compile"

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        mode: str | None = None,
        dynamic: bool = False,
        signature: EncoderSignature | None = None,
        backend: str = "inductor",
    ) -> None:
        super().__init__(signature or signature_of(model))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
        self.device = torch.device(device)
        self.backend = backend
        self.model = model.eval().to(self.device)
        if backend == "inductor":
            self.mode = mode or ("reduce-overhead" if self.device.type == "cuda" else "default")
            self.compiled = torch.compile(self.model, mode=self.mode, dynamic=dynamic)
        else:  # modes are inductor options
            self.mode = None
            self.compiled = torch.compile(self.model, backend=backend, dynamic=dynamic)

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device)
            args = (xt,) if subject is None else (xt, torch.from_numpy(subject).to(self.device))
            out = self.compiled(*args)
            # CUDA-graph outputs live in a buffer the next replay overwrites: copy out now
            return out.float().cpu().numpy().copy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "backend": self.backend, "mode": self.mode}
