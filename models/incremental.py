"""Incremental sliding windows for the brain module: compute only the new samples at each stride.

Sliding windows at a 50 ms stride overlap by ~95 %; recomputing the whole window each stride repeats ~20× the
work. A conv stack can be streamed when its convolutions are *causal and valid* (no padding): the feature at a
time then depends only on the input up to that time, never on where a window starts or ends. This module
gives the brain module that streaming form:

- :class:`CausalBrainModule` wraps a :class:`~models.encoders.brain_module.BrainModule`'s weights and runs
  its dilated convs causally without padding on ``n_times + context`` input samples (``context`` = the
  receptive field − 1), then aggregates the last ``n_times`` feature frames. It is an ordinary module (train
  it, export it to ONNX); its input window starts ``context`` samples earlier than the base model's.
- :class:`IncrementalEncoder` runs the same computation sample-block by sample-block: each conv keeps its last
  ``(kernel − 1) × dilation`` input frames, pointwise layers run on the new frames only, the last
  ``n_times`` output frames are kept, and the aggregation + head (cheap) run on those at each stride.

After ``n_times + context`` samples the incremental embedding equals ``CausalBrainModule`` on the last
``n_times + context`` samples (tested to float precision). The convs have finite memory, so a non-finite
input poisons the embedding only until it has left the receptive field; :meth:`IncrementalEncoder.embedding`
returns None until then.

Note: the trained non-causal brain module (centred ``same`` padding) cannot be streamed exactly (its edge
frames see zero padding that moves with the window); a model meant for incremental serving is trained as a
:class:`CausalBrainModule`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional

__all__ = ["CausalBrainModule", "IncrementalEncoder", "receptive_context"]


def _convs(base: nn.Module) -> Iterator[nn.Conv1d]:
    for block in base.blocks:
        yield from block.convs
        if block.glu is not None:
            yield block.glu


def _span(conv: nn.Conv1d) -> int:
    """Input frames a valid conv consumes beyond its output length."""
    return (conv.kernel_size[0] - 1) * conv.dilation[0]


def receptive_context(base: nn.Module) -> int:
    """Samples of history a brain module's conv stack needs before its first output frame."""
    return sum(_span(c) for c in _convs(base))


def _valid(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    return functional.conv1d(x, conv.weight, conv.bias, stride=1, padding=0, dilation=conv.dilation)


class CausalBrainModule(nn.Module):
    """A brain module run with causal, unpadded convs: ``(batch, ch, n_times + context) → (batch, dim)``.

    Parameters
    ----------
    base : BrainModule
        Supplies every weight (shared, not copied) and the architecture.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        if not hasattr(base, "blocks") or not hasattr(base, "aggregate"):
            raise TypeError(f"CausalBrainModule needs a brain module, got {type(base).__name__}")
        if any(c.stride[0] != 1 for c in _convs(base)):
            raise ValueError("strided convolutions cannot be streamed sample by sample")
        self.base = base
        self.context = receptive_context(base)
        self.n_out_times = int(base.config.n_times)
        self.config = base.config.model_copy(update={"n_times": self.n_out_times + self.context})

    def front(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        """Pointwise-in-time layers: spatial attention, 1×1 conv, subject layer."""
        b = self.base
        return b.subject_layer(b.initial(b.spatial(x)), subject)

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """The residual dilated conv blocks, valid and causal: output is shorter by ``context``."""
        for block in self.base.blocks:
            for i, (conv, norm) in enumerate(zip(block.convs, block.norms, strict=True)):
                y = block.dropout(functional.gelu(norm(_valid(conv, x))))
                x = x[..., -y.shape[-1] :] + y if (i > 0 or block.residual_first) else y
            if block.glu is not None:
                x = functional.glu(_valid(block.glu, x), dim=1)
        return x

    def back(self, z: torch.Tensor) -> torch.Tensor:
        """Aggregation over the last ``n_out_times`` final frames and the output head."""
        b = self.base
        z = b.aggregate(z[..., -self.n_out_times :])
        return b.clip_head(z) if b.config.output_head == "clip" else b.mse_head(z)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        z = self.base.final(self.stack(self.front(x, subject)))
        return self.back(z)


class IncrementalEncoder:
    """Stream model-rate samples in, get the sliding-window embedding out, computing only new frames.

    Parameters
    ----------
    model : CausalBrainModule | BrainModule
        A brain module is wrapped in :class:`CausalBrainModule` (its weights interpreted causally).
    subject : int | None
        Subject layer (None: the mean of the subject layers).
    device : str
    """

    def __init__(self, model: nn.Module, subject: int | None = None, device: str = "cpu") -> None:
        self.model = (model if isinstance(model, CausalBrainModule) else CausalBrainModule(model)).eval()
        self.model.to(device)
        self.device = torch.device(device)
        self.subject = None if subject is None else torch.tensor([subject], device=self.device)
        self.n_channels = int(self.model.base.config.n_channels)
        self.n_times = self.model.n_out_times
        self.context = self.model.context
        self.window = self.n_times + self.context
        self._convs = list(_convs(self.model.base))
        self.reset()

    def reset(self) -> None:
        """Forget all history (after a gap in the samples)."""
        self._caches = [None] * len(self._convs)
        self._frames: torch.Tensor | None = None
        self.n_seen = 0
        self._last_bad = -(10**12)

    @property
    def ready(self) -> bool:
        """True once a full window (``n_times + context`` samples) has been seen and none is non-finite."""
        return self.n_seen >= self.window and self.n_seen - self._last_bad > self.window

    def push(self, x: np.ndarray) -> None:
        """Feed new samples ``(n_channels, s)`` (model rate, in order, no gap)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != self.n_channels:
            raise ValueError(f"expected new samples of shape ({self.n_channels}, s), got {x.shape}")
        s = x.shape[1]
        if s == 0:
            return
        bad = ~np.isfinite(x).all(axis=0)
        if bad.any():
            self._last_bad = self.n_seen + int(np.flatnonzero(bad)[-1])
            x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)  # keeps the caches finite
        with torch.inference_mode():
            h = self.model.front(torch.from_numpy(x)[None].to(self.device), self.subject)
            h = self._stack_step(h)
            z = self.model.base.final(h)
            prev = self._frames if self._frames is not None else z.new_zeros(1, z.shape[1], 0)
            self._frames = torch.cat([prev, z], dim=-1)[..., -self.n_times :]
        self.n_seen += s

    def _stack_step(self, x: torch.Tensor) -> torch.Tensor:
        k = 0
        for block in self.model.base.blocks:
            for i, (_, norm) in enumerate(zip(block.convs, block.norms, strict=True)):
                y = block.dropout(functional.gelu(norm(self._conv_step(k, x))))
                k += 1
                x = x + y if (i > 0 or block.residual_first) else y
            if block.glu is not None:
                x = functional.glu(self._conv_step(k, x), dim=1)
                k += 1
        return x

    def _conv_step(self, k: int, x: torch.Tensor) -> torch.Tensor:
        conv, span = self._convs[k], _span(self._convs[k])
        cache = self._caches[k]
        if cache is None:  # stream start: zeros, as a causal conv sees before the first sample
            cache = x.new_zeros(1, x.shape[1], span)
        inp = torch.cat([cache, x], dim=-1)
        self._caches[k] = inp[..., inp.shape[-1] - span :]
        return _valid(conv, inp)

    def embedding(self) -> np.ndarray | None:
        """Embedding (dim,) of the window ending at the last pushed sample, or None if not ready."""
        if not self.ready:
            return None
        with torch.inference_mode():
            return self.model.back(self._frames)[0].float().cpu().numpy()

    def step(self, x: np.ndarray) -> np.ndarray | None:
        """:meth:`push` then :meth:`embedding`."""
        self.push(x)
        return self.embedding()
