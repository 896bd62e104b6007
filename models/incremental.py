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
frames see zero padding that moves with the window); a model meant for incremental serving is trained causal
(``causal: true`` in its architecture, :class:`~models.encoders.brain_module.BrainModuleConfig`): such a
brain module computes the function of :class:`CausalBrainModule` with the same weights, its ``n_times``
already counting the context.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.fusion import fuse_conv_bn_eval

from brainstream.models.runtime.precision import check_precision
from brainstream.models.runtime.torch_runtime import PRECISIONS

__all__ = ["CausalBrainModule", "IncrementalEncoder", "StreamStep", "receptive_context"]


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
        Supplies every weight (shared, not copied) and the architecture. A non-causal base gives the causal
        function of its weights over ``base.config.n_times`` output frames; a causal one (``causal: true``,
        trained as such) is that function already, over its own ``n_times`` input samples.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        if not hasattr(base, "blocks") or not hasattr(base, "aggregate"):
            raise TypeError(f"CausalBrainModule needs a brain module, got {type(base).__name__}")
        if any(c.stride[0] != 1 for c in _convs(base)):
            raise ValueError("strided convolutions cannot be streamed sample by sample")
        self.base = base
        self.context = receptive_context(base)
        if getattr(base.config, "causal", False):
            self.n_out_times = int(base.config.n_frames)
            self.config = base.config
        else:
            self.n_out_times = int(base.config.n_times)
            # the config of the equivalent causal brain module: input window = output frames + context
            self.config = base.config.model_copy(
                update={"n_times": self.n_out_times + self.context, "causal": True}
            )

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


class StreamStep(nn.Module):
    """One incremental step as a pure function (exportable to ONNX with a dynamic number of new samples):
    ``(x_new (1, ch, s), frames (1, n_times, F), *caches (1, span, C))``
    ``-> (embedding (1, D), frames, *caches)``.

    The step runs time-major: each dilated conv is one matrix product of the ``s`` new frames' stacked taps
    ``(s, k·C_in)`` with a constant ``(k·C_in, C_out)`` weight (BatchNorm folded in). A step does a few
    frames of arithmetic but reads every weight (42 MB for the full-size module), so its cost is set by
    memory bandwidth, not by its FLOPs (docs/benchmarks.md). The pointwise front
    (spatial attention, 1×1 conv, subject layer) is folded into one matrix, computed once in float64.
    """

    def __init__(self, causal: CausalBrainModule, subject: int | None = None) -> None:
        super().__init__()
        base = causal.base
        self.causal = causal
        self.convs = list(_convs(base))
        self.spans = [_span(c) for c in self.convs]
        self.taps = [(int(c.kernel_size[0]), int(c.dilation[0])) for c in self.convs]
        with torch.no_grad():
            spatial = base.spatial.weights().double()  # (C_sp, C_in)
            w_init = base.initial.weight[..., 0].double()  # (C_sp, C_sp)
            b_init = base.initial.bias.double()
            layers = base.subject_layer.weight.double()
            subj = base.subject_layer.agnostic().double() if subject is None else layers[subject]
            front_w = subj.T @ w_init @ spatial
            front_b = subj.T @ b_init
            fused = []
            for block in base.blocks:
                fused += [
                    fuse_conv_bn_eval(conv, norm) for conv, norm in zip(block.convs, block.norms, strict=True)
                ]
                if block.glu is not None:
                    fused.append(block.glu)
            for k, conv in enumerate(fused):
                # rows ordered (tap, input channel), as the taps are stacked in forward
                weight = conv.weight.permute(2, 1, 0).reshape(-1, conv.out_channels)
                self.register_buffer(f"conv{k}_w", weight.contiguous())
                self.register_buffer(f"conv{k}_b", conv.bias.detach().clone())
            final = base.final[0]
            self.register_buffer("final_w", final.weight[..., 0].T.contiguous())  # (C, F)
            self.register_buffer("final_b", final.bias.detach().clone())
        self.register_buffer("front_w", front_w.T.float().contiguous())  # (C_in, C_sp)
        self.register_buffer("front_b", front_b.float())

    def _conv(
        self, k: int, cache: torch.Tensor, h: torch.Tensor, new_caches: list[torch.Tensor]
    ) -> torch.Tensor:
        inp = torch.cat([cache[0], h], dim=0)  # (span + s, C_in)
        new_caches.append(inp[-self.spans[k] :][None])
        n_new = h.shape[0]
        taps, dilation = self.taps[k]
        stacked = torch.cat([inp[j * dilation : j * dilation + n_new] for j in range(taps)], dim=1)
        return torch.matmul(stacked, getattr(self, f"conv{k}_w")) + getattr(self, f"conv{k}_b")

    def forward(
        self, x: torch.Tensor, frames: torch.Tensor, *caches: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        h = torch.matmul(x[0].transpose(0, 1), self.front_w) + self.front_b  # (s, C_sp)
        new_caches: list[torch.Tensor] = []
        k = 0
        for block in self.causal.base.blocks:
            for i in range(len(block.convs)):
                y = functional.gelu(self._conv(k, caches[k], h, new_caches))
                h = h + y if (i > 0 or block.residual_first) else y
                k += 1
            if block.glu is not None:
                h = functional.glu(self._conv(k, caches[k], h, new_caches), dim=1)
                k += 1
        z = functional.gelu(torch.matmul(h, self.final_w) + self.final_b)  # (s, F)
        frames = torch.cat([frames[0], z], dim=0)[-self.causal.n_out_times :][None]  # (1, T, F)
        return (self._back(frames), frames, *new_caches)

    def _back(self, frames: torch.Tensor) -> torch.Tensor:
        base = self.causal.base
        aggregate = base.aggregate
        if aggregate.kind == "affine":  # a weighting of time: one (1, T) @ (T, F) product
            z = torch.matmul(aggregate.proj.weight, frames[0]) + aggregate.proj.bias
        else:
            z = aggregate(frames.transpose(1, 2))
        return base.clip_head(z) if base.config.output_head == "clip" else base.mse_head(z)


class IncrementalEncoder:
    """Stream model-rate samples in, get the sliding-window embedding out, computing only new frames.

    Parameters
    ----------
    model : CausalBrainModule | BrainModule
        The streaming model: a :class:`CausalBrainModule`, or a brain module trained causal
        (``config.causal``). A plain (centred-padding) brain module is refused: wrapping its weights in
        :class:`CausalBrainModule` computes a different function, so only a model trained in that form
        gives meaningful embeddings; wrap it explicitly if that is what you mean.
    subject : int | None
        Subject layer (None: the mean of the subject layers).
    backend : str
        ``"torch"`` (eager, CPU) or ``"onnxruntime"`` (the step exported to ONNX; one session call per push).
    onnx_path : path | None
        Where to write the step graph for ``"onnxruntime"`` (default: a temporary file).
    threads : int | None
        ONNX Runtime intra-op threads.
    precision : str
        ``"fp32"``, or ``"bf16"`` with the torch backend: a step reads every weight for a few frames of
        arithmetic, so halving the weights' bytes is what makes it faster (the caller's model is left fp32).
    """

    def __init__(
        self,
        model: nn.Module,
        subject: int | None = None,
        backend: str = "torch",
        onnx_path: str | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> None:
        if getattr(getattr(model, "config", None), "causal", False) and hasattr(model, "blocks"):
            model = CausalBrainModule(model)  # trained causal: the same function, run stream-wise
        if not isinstance(model, CausalBrainModule):
            raise TypeError(
                f"IncrementalEncoder needs a CausalBrainModule, got {type(model).__name__}: a brain module "
                "trained with centred padding cannot be streamed exactly; train it with causal: true or "
                "wrap it explicitly in CausalBrainModule, knowing that its embeddings then differ from the "
                "trained model's"
            )
        if backend not in ("torch", "onnxruntime"):
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
        if precision not in ("fp32", "bf16") or (backend == "onnxruntime" and precision != "fp32"):
            raise ValueError(
                f"precision {precision!r} is not available on the {backend} incremental step: use fp32, or "
                "bf16 with backend torch"
            )
        check_precision(precision, "cpu")
        causal = model.eval().cpu()
        self._dtype = PRECISIONS[precision]
        self.precision = precision
        if self._dtype != torch.float32:
            causal = copy.deepcopy(causal)  # the step holds the model: converting must not touch the caller's
        self.step_module = StreamStep(causal, subject).eval().to(self._dtype)
        self.n_channels = int(causal.base.config.n_channels)
        self.n_times = causal.n_out_times
        self.context = causal.context
        self.window = self.n_times + self.context
        self.n_features = int(causal.base.final[0].out_channels)
        self._cache_shapes = [
            (1, sp, int(c.in_channels))
            for c, sp in zip(self.step_module.convs, self.step_module.spans, strict=True)
        ]
        self.backend = backend
        self._session = self._export(onnx_path, threads) if backend == "onnxruntime" else None
        self.reset()

    def _export(self, onnx_path: str | None, threads: int | None):
        import tempfile
        import warnings

        import onnxruntime as ort

        from brainstream.models.runtime.onnx_runtime import default_threads

        n = len(self._cache_shapes)
        if onnx_path is None:
            fd, path = tempfile.mkstemp(suffix=".onnx", prefix="stream-step-")
            os.close(fd)
        else:
            path = onnx_path
        args = (
            torch.zeros(1, self.n_channels, 3),
            torch.zeros(1, self.n_times, self.n_features),
            *[torch.zeros(*shape) for shape in self._cache_shapes],
        )
        names = ["x", "frames", *[f"cache{i}" for i in range(n)]]
        outs = ["embedding", "frames_out", *[f"cache_out{i}" for i in range(n)]]
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.step_module, args, path, dynamo=False, input_names=names, output_names=outs,
                dynamic_axes={"x": {2: "new_samples"}}, opset_version=17,
            )  # fmt: skip
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        if onnx_path is None:
            os.unlink(path)  # the session holds the graph in memory
        return session

    def reset(self) -> None:
        """Forget all history (after a gap in the samples): as at stream start, the past is zeros."""
        self._frames = np.zeros((1, self.n_times, self.n_features), np.float32)
        self._caches = [np.zeros(shape, np.float32) for shape in self._cache_shapes]
        self._emb: np.ndarray | None = None
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
        if x.shape[1] == 0:
            return
        finite = np.isfinite(x)
        if not finite.all():
            self._last_bad = self.n_seen + int(np.flatnonzero(~finite.all(axis=0))[-1])
            x = np.where(finite, x, 0.0).astype(np.float32)  # keeps the caches finite
        x = np.ascontiguousarray(x[None])
        if self._session is not None:
            feed = {"x": x, "frames": self._frames, **{f"cache{i}": c for i, c in enumerate(self._caches)}}
            out = self._session.run(None, feed)
        else:
            with torch.inference_mode():
                tensors = [torch.from_numpy(a).to(self._dtype) for a in (x, self._frames, *self._caches)]
                out = [t.float().numpy() for t in self.step_module(*tensors)]
        self._emb, self._frames, self._caches = out[0][0], out[1], list(out[2:])
        self.n_seen += x.shape[2]

    def embedding(self) -> np.ndarray | None:
        """Embedding (dim,) of the window ending at the last pushed sample, or None if not ready."""
        return self._emb.copy() if self.ready else None

    def step(self, x: np.ndarray) -> np.ndarray | None:
        """:meth:`push` then :meth:`embedding`."""
        self.push(x)
        return self.embedding()
