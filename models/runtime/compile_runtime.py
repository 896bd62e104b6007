"""``torch.compile`` backend: Inductor kernels; on a GPU replayed as CUDA graphs."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from brainstream.models.runtime.base import EncoderRuntime, EncoderSignature, signature_of

logger = logging.getLogger(__name__)


class _GraphedCall:
    """One CUDA graph of ``fn`` for fixed input shapes, with static input and output buffers.

    Captured with ``torch.cuda.graph`` rather than Inductor's ``reduce-overhead`` mode: Inductor's graph
    trees keep their state in thread-local storage, so a runtime warmed up on one thread fails when the
    decoder's loop thread calls it (seen on an H100); a plain CUDA graph replays from any thread.
    """

    def __init__(self, fn: Any, example: tuple[torch.Tensor, ...], warmup: int = 2) -> None:
        self.inputs = tuple(a.clone() for a in example)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile and autotune outside the capture
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        for static, arg in zip(self.inputs, args, strict=True):
            static.copy_(arg)
        self.graph.replay()
        return self.output


class CompileRuntime(EncoderRuntime):
    """Run ``torch.compile(model)``; the first calls compile (call :meth:`warmup` before going live).

    Parameters
    ----------
    model : nn.Module
    device : str
        ``"cpu"`` or ``"cuda[:i]"``.
    mode : str | None
        torch.compile mode (default ``"default"``).
    dynamic : bool
        Compile for varying batch sizes (False: one graph per batch size, the fastest for batch 1).
    signature : EncoderSignature | None
        Read from ``model.config`` when None.
    backend : str
        torch.compile backend; ``"inductor"`` generates kernels (C++ on CPU, Triton on GPU).
    cuda_graphs : bool | None
        Capture each input shape once as a CUDA graph and replay it (default: on CUDA). One window is a few
        dozen small kernels, so on a GPU their launch overhead dominates without it.
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
        cuda_graphs: bool | None = None,
    ) -> None:
        super().__init__(signature or signature_of(model))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
        self.device = torch.device(device)
        self.backend = backend
        self.model = model.eval().to(self.device)
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs needs a CUDA device")
        if backend == "inductor":
            self.mode = mode or "default"
            self.compiled = torch.compile(self.model, mode=self.mode, dynamic=dynamic)
        else:  # modes are inductor options
            self.mode = None
            self.compiled = torch.compile(self.model, backend=backend, dynamic=dynamic)
        self._graphs: dict[tuple, _GraphedCall] = {}

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            args = (
                (torch.from_numpy(x),)
                if subject is None
                else (torch.from_numpy(x), torch.from_numpy(subject))
            )
            if not self.cuda_graphs:
                return self.compiled(*(a.to(self.device) for a in args)).float().cpu().numpy()
            key = tuple(tuple(a.shape) for a in args)
            graphed = self._graphs.get(key)
            if graphed is None:
                logger.info("capturing a CUDA graph for input shapes %s", key)
                graphed = self._graphs[key] = _GraphedCall(
                    self.compiled, tuple(a.to(self.device) for a in args)
                )
            # the output buffer is overwritten by the next replay: copy it out now
            return graphed(*args).float().cpu().numpy().copy()

    def close(self) -> None:
        self._graphs.clear()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": str(self.device),
            "backend": self.backend,
            "mode": self.mode,
            "cuda_graphs": self.cuda_graphs,
        }
