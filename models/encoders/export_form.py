"""Inference forms of encoders for ONNX export: the same function, arranged for ONNX Runtime's CPU kernels.

ONNX Runtime runs 2-D convolutions in its blocked ``NCHWc`` layout with direct-convolution kernels, but 1-D
convolutions through im2col + GEMM; on the full-size brain module the 2-D path is measurably faster per
window (docs/benchmarks.md). :class:`BrainModuleExportForm` therefore runs the conv stack as ``(batch, C, 1,
T)`` 2-D convolutions with ``(1, k)`` kernels, folds each BatchNorm into the conv before it, and merges the
three linear maps at the input (spatial attention, 1×1 conv, subject layer) into one matrix per subject.
Every change is exact in real arithmetic; the export tests hold ONNX Runtime to 1e-4 of torch eager. A causal
brain module (``causal: true``: unpadded convs) keeps its form: the residuals add the aligned last frames.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv1d_as_2d(conv: nn.Conv1d) -> nn.Conv2d:
    """The ``(1, k)`` 2-D convolution equal to a 1-D one on ``(batch, C, 1, T)`` input."""
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"cannot convert {conv}: only ungrouped, zero-padded, numeric-padding convs")
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        (1, conv.kernel_size[0]),
        stride=(1, conv.stride[0]),
        padding=(0, conv.padding[0]),
        dilation=(1, conv.dilation[0]),
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        out.weight.copy_(conv.weight.unsqueeze(2))
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


class _BlockForm(nn.Module):
    """A :class:`~models.encoders.brain_module.ConvBlock` in eval mode: BN folded, 2-D layout."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv1d_as_2d(fuse_conv_bn_eval(conv, norm))
            for conv, norm in zip(block.convs, block.norms, strict=True)
        )
        self.residual_first = block.residual_first
        self.causal = block.causal
        self.glu = conv1d_as_2d(block.glu) if block.glu is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            y = functional.gelu(conv(x))
            if self.causal:  # unpadded convs shorten the sequence: add the aligned last input frames
                x = x[..., -y.shape[-1] :]
            x = x + y if (i > 0 or self.residual_first) else y
        if self.glu is not None:
            x = functional.glu(self.glu(x), dim=1)
        return x


class BrainModuleExportForm(nn.Module):
    """An eval-mode :class:`~models.encoders.brain_module.BrainModule` arranged for ONNX Runtime.

    Parameters
    ----------
    model : BrainModule
        Copied (not shared): later training of ``model`` does not change this form.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if model.training:
            raise ValueError("the export form folds BatchNorm statistics: call model.eval() first")
        self.config = model.config
        with torch.no_grad():
            mixing = model.spatial.weights()  # (S, C): input-independent, a constant of the export
            initial = model.initial.weight[:, :, 0] @ mixing  # (S, C)
            subjects = model.subject_layer.weight.transpose(1, 2)  # (n_subjects, S, S), x -> W_s^T x
            # one (S, C) matrix and (S,) bias per subject; index n_subjects is the subject-agnostic path
            # (subject=None: the shared layer or the mean)
            tables = torch.cat([subjects, model.subject_layer.agnostic().T[None]])
            self.register_buffer("input_weight", tables @ initial)
            self.register_buffer("input_bias", tables @ model.initial.bias)
        self.blocks = nn.Sequential(*(_BlockForm(b) for b in model.blocks))
        self.final = conv1d_as_2d(model.final[0])
        self.aggregate = copy.deepcopy(model.aggregate)
        self.head = copy.deepcopy(model.clip_head if model.config.output_head == "clip" else model.mse_head)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        if subject is None:
            x = torch.matmul(self.input_weight[-1], x) + self.input_bias[-1, :, None]
        else:
            x = torch.matmul(self.input_weight[subject], x) + self.input_bias[subject][:, :, None]
        x = functional.gelu(self.final(self.blocks(x.unsqueeze(2)))).squeeze(2)
        return self.head(self.aggregate(x))
