"""``torch.compile`` backend: Inductor kernels; on a GPU ``mode="reduce-overhead"`` replays CUDA graphs."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
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
    own_thread : bool | None
        Run every call (compilation included) on one dedicated thread. Default: on CUDA. CUDA graphs
        recorded by ``reduce-overhead`` live in thread-local state, so a runtime warmed up on one thread and
        called from another (the decoder's loop) would fail; routing calls through one thread costs tens of
        microseconds.
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
        own_thread: bool | None = None,
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
        if own_thread is None:
            own_thread = self.device.type == "cuda"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="compile-runtime") if own_thread else None
        self._worker_ident: int | None = None

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        if self._executor is None or threading.get_ident() == self._worker_ident:
            return self._call(x, subject)
        return self._executor.submit(self._call, x, subject).result()

    @property
    def worker_thread_ident(self) -> int | None:
        """Ident of the thread every call runs on (None before the first call, or without ``own_thread``)."""
        return self._worker_ident

    def _call(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        if self._executor is not None:
            self._worker_ident = threading.get_ident()
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device)
            args = (xt,) if subject is None else (xt, torch.from_numpy(subject).to(self.device))
            out = self.compiled(*args)
            # CUDA-graph outputs live in a buffer the next replay overwrites: copy out now
            return out.float().cpu().numpy().copy()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "backend": self.backend, "mode": self.mode}
