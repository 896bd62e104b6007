"""The brain module of Défossez et al. (2023) as adapted by Benchetrit et al. (2023).

``(batch, channels, times)`` MEG/EEG (+ a subject index) → ``(batch, D)`` image embedding:

spatial attention over 2-D sensor positions (Fourier features → softmax over virtual channels, spatial
dropout) → 1×1 conv → per-subject linear layer (optionally beside a trained shared one: subject dropout)
→ residual dilated conv blocks (kernel 3, cyclic dilation, BatchNorm, GELU, GLU gating) → 1×1 conv →
temporal aggregation (learned affine, GAP or attention) → separate CLIP and MSE heads.

With ``causal: true`` the same layers run as a *causal* module: the dilated convs have no padding (each output
frame depends only on input up to its time), so an input window of ``n_times`` samples yields
``n_times - context`` feature frames, where ``context`` (:func:`conv_context`, the receptive field − 1) is the
history the conv stack needs; the aggregation runs over those frames, i.e. over the last ``n_times - context``
samples of the window. That is exactly the function :class:`models.incremental.IncrementalEncoder` computes
stride by stride, so a model trained causal is served incrementally without approximation. Training data for
it are cut ``context`` samples before the window of interest (``models.training.config``).

Every op exports to ONNX with a dynamic batch axis: no data-dependent shapes, the spatial dropout only runs in
training, the subject layer is a gather on a weight table.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional

from brainstream.models.config_base import StrictModel


class BrainModuleConfig(StrictModel):
    """Architecture of the brain module (all sizes configurable; defaults follow Benchetrit et al.)."""

    name: Literal["brain_module"] = "brain_module"
    n_channels: int = Field(gt=0, description="input sensors")
    n_times: int = Field(
        gt=0, description="samples per input window at the model rate (causal: including the context)"
    )
    dim: int = Field(default=768, gt=0, description="embedding dimension D")
    n_subjects: int = Field(default=1, ge=1)
    positions: list[list[float]] | None = Field(
        default=None,
        description="(n_channels, 2) sensor positions in [0, 1]; stored in the weights too (a buffer)",
    )
    spatial_channels: int = Field(default=270, gt=0, description="virtual channels of the spatial attention")
    fourier_freqs: int = Field(default=32, gt=0, description="Fourier frequencies per axis of positions")
    spatial_dropout: float = Field(default=0.2, ge=0, lt=1, description="radius of the dropped sensor disc")
    subject_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="> 0: a shared, subject-agnostic layer (the path of a subject never seen, subject=None) "
        "replaces a training trial's own subject layer with this probability, so that path is trained",
    )
    hidden: int = Field(default=320, gt=0)
    depth: int = Field(default=5, gt=0, description="residual blocks (2 convs + 1 GLU conv each)")
    kernel_size: int = Field(default=3, gt=0)
    dilation_period: int = Field(default=5, gt=0, description="dilation cycles over 2**(k % period)")
    glu: bool = True
    dropout: float = Field(default=0.0, ge=0, lt=1)
    out_channels: int = Field(default=2048, gt=0, description="channels of the last 1×1 conv")
    aggregation: Literal["affine", "channel_affine", "gap", "attention"] = Field(
        default="affine",
        description="affine: one learned weighting of time for all channels (Benchetrit et al.); "
        "channel_affine: one per channel (more latency-specific, for small data); gap; attention",
    )
    head_hidden: int | None = Field(default=None, description="hidden size of the heads (None: linear)")
    output_head: Literal["clip", "mse"] = Field(
        default="clip", description="which head forward() returns (MSE-only training uses 'mse')"
    )
    causal: bool = Field(
        default=False,
        description="unpadded causal convs; aggregation over the last n_times - context frames (streamable "
        "sample by sample: models.incremental)",
    )

    @property
    def context(self) -> int:
        """Input samples before the first aggregated frame: the receptive field − 1 when causal, else 0."""
        if not self.causal:
            return 0
        return conv_context(self.kernel_size, self.depth, self.dilation_period, self.glu)

    @property
    def n_frames(self) -> int:
        """Feature frames the temporal aggregation sees."""
        return self.n_times - self.context

    @model_validator(mode="after")
    def _check(self) -> BrainModuleConfig:
        if self.positions is not None and (
            len(self.positions) != self.n_channels or any(len(p) != 2 for p in self.positions)
        ):
            raise ValueError(
                f"positions must be {self.n_channels} pairs (x, y), got {len(self.positions)} entries"
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (keeps the length), got {self.kernel_size}")
        if self.n_frames < 1:
            raise ValueError(
                f"a causal brain module needs more than its receptive context of {self.context} samples per "
                f"window, got n_times {self.n_times}: widen the window (tmin earlier) or use fewer / "
                "less dilated blocks"
            )
        return self


def block_dilations(k: int, period: int) -> tuple[int, int]:
    """Dilations of the two residual convs of block ``k``: cycling over ``2 ** (j % period)``."""
    return 2 ** ((2 * k) % period), 2 ** ((2 * k + 1) % period)


def conv_context(kernel_size: int, depth: int, dilation_period: int, glu: bool) -> int:
    """Samples of history the conv stack needs before one output frame (receptive field − 1)."""
    spans = [(kernel_size - 1) * d for k in range(depth) for d in block_dilations(k, dilation_period)]
    return sum(spans) + (depth * (kernel_size - 1) if glu else 0)


class SpatialAttention(nn.Module):
    """Each virtual channel is a softmax-weighted sum of sensors; weights are a function of positions."""

    def __init__(self, n_channels: int, n_out: int, n_freqs: int, dropout_radius: float, margin: float = 0.1):
        super().__init__()
        self.n_freqs = n_freqs
        self.margin = margin
        self.dropout_radius = dropout_radius
        self.register_buffer("positions", torch.full((n_channels, 2), 0.5))
        self.heads = nn.Parameter(torch.randn(n_out, 2 * n_freqs * n_freqs) / math.sqrt(2 * n_freqs**2))

    def fourier(self) -> torch.Tensor:
        pos = self.margin + (1 - 2 * self.margin) * self.positions
        freqs = torch.arange(self.n_freqs, dtype=pos.dtype, device=pos.device)
        # phase[i, k, l] = 2π (k x_i + l y_i)
        phase = (
            2
            * math.pi
            * (freqs[None, :, None] * pos[:, 0, None, None] + freqs[None, None, :] * pos[:, 1, None, None])
        )
        phase = phase.reshape(pos.shape[0], -1)
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)

    def mask(self, keep: torch.Tensor) -> None:
        """Leave out the sensors where ``keep`` is False: each virtual channel's softmax runs over the others.

        The mask becomes part of the state (``keep``), so exported artefacts of the masked module are told
        apart from the unmasked one's; it is a serving-time change, not saved with a checkpoint.
        """
        keep = torch.as_tensor(keep, dtype=torch.bool).reshape(-1)
        if keep.numel() != self.positions.shape[0]:
            raise ValueError(f"mask needs {self.positions.shape[0]} entries, got {keep.numel()}")
        if not bool(keep.any()):
            raise ValueError("cannot mask every sensor: the spatial attention needs at least one")
        self.register_buffer("keep", keep.to(self.positions.device))

    def weights(self) -> torch.Tensor:
        """(n_out, n_channels) mixing matrix; rows sum to one (zero weight on masked sensors)."""
        scores = self.heads @ self.fourier().T
        keep = getattr(self, "keep", None)
        if keep is not None:
            scores = scores.masked_fill(~keep[None, :], float("-inf"))
        if self.training and self.dropout_radius > 0:
            # drop every sensor within a disc around a random point (the same for the whole batch)
            center = torch.rand(2, device=scores.device)
            dropped = (self.positions - center).norm(dim=1) <= self.dropout_radius
            if bool(dropped.all()):
                dropped = torch.zeros_like(dropped)
            scores = scores.masked_fill(dropped[None, :], float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weights(), x)


class SubjectLayer(nn.Module):
    """One (C, C) matrix per subject, initialised to the identity, and the subject-agnostic path.

    ``subject=None`` is a subject the model never saw (leave-one-subject-out, a new person's zero-shot):
    without ``dropout`` it uses the mean of the subject layers (exact for one subject); with ``dropout`` > 0
    a separate shared layer (``shared``) stands in for each training trial's own layer with that
    probability ("subject dropout"), so the subject-agnostic path is one the training optimised, on every
    subject's data, rather than an average of layers each fitted to one person.
    """

    def __init__(self, n_channels: int, n_subjects: int, dropout: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(n_channels).repeat(n_subjects, 1, 1))
        self.dropout = float(dropout)
        if self.dropout > 0:
            self.shared = nn.Parameter(torch.eye(n_channels))

    def agnostic(self) -> torch.Tensor:
        """The (C, C) layer of a subject the model never saw: the shared layer, else the mean."""
        shared = getattr(self, "shared", None)
        return shared if shared is not None else self.weight.mean(dim=0)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        if subject is None:
            return torch.matmul(self.agnostic().T, x)
        layers = self.weight[subject]
        if self.training and self.dropout > 0:
            drop = torch.rand(layers.shape[0], device=layers.device) < self.dropout
            layers = torch.where(drop[:, None, None], self.shared[None], layers)
        return torch.matmul(layers.transpose(1, 2), x)


class ConvBlock(nn.Module):
    """Two residual dilated convs (BN, GELU) then an optional GLU-gated conv.

    ``causal``: the convs are unpadded, each shortens the sequence by its span, and a residual adds the
    input's last frames (those aligned in time with the output frames).
    """

    def __init__(
        self,
        c_in: int,
        hidden: int,
        kernel: int,
        dilations: tuple[int, int],
        glu: bool,
        dropout: float,
        causal: bool = False,
    ):
        super().__init__()
        self.causal = causal
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, dil in enumerate(dilations):
            pad = 0 if causal else dil * (kernel // 2)
            self.convs.append(
                nn.Conv1d(c_in if i == 0 else hidden, hidden, kernel, dilation=dil, padding=pad)
            )
            self.norms.append(nn.BatchNorm1d(hidden))
        self.residual_first = c_in == hidden
        self.dropout = nn.Dropout(dropout)
        glu_pad = 0 if causal else kernel // 2
        self.glu = nn.Conv1d(hidden, 2 * hidden, kernel, padding=glu_pad) if glu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = self.dropout(functional.gelu(norm(conv(x))))
            if self.causal:
                x = x[..., -y.shape[-1] :]
            x = x + y if (i > 0 or self.residual_first) else y
        if self.glu is not None:
            x = functional.glu(self.glu(x), dim=1)
        return x


class TemporalAggregation(nn.Module):
    def __init__(self, kind: str, n_times: int, channels: int):
        super().__init__()
        self.kind = kind
        if kind == "affine":
            self.proj = nn.Linear(n_times, 1)
        elif kind == "channel_affine":
            self.weight = nn.Parameter(torch.full((channels, n_times), 1.0 / n_times))
            self.bias = nn.Parameter(torch.zeros(channels))
        elif kind == "attention":
            self.proj = nn.Conv1d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "affine":
            return self.proj(x).squeeze(-1)
        if self.kind == "channel_affine":
            return (x * self.weight).sum(dim=-1) + self.bias
        if self.kind == "gap":
            return x.mean(dim=-1)
        attn = torch.softmax(self.proj(x), dim=-1)  # (b, 1, t)
        return (x * attn).sum(dim=-1)


def _head(c_in: int, hidden: int | None, dim: int) -> nn.Module:
    if hidden is None:
        return nn.Sequential(nn.LayerNorm(c_in), nn.GELU(), nn.Linear(c_in, dim))
    return nn.Sequential(
        nn.LayerNorm(c_in), nn.GELU(), nn.Linear(c_in, hidden), nn.GELU(), nn.Linear(hidden, dim)
    )


class BrainModule(nn.Module):
    """See the module docstring. ``forward(x, subject=None) -> (batch, dim)`` from the configured head;
    ``forward_heads`` returns both heads for training."""

    def __init__(self, config: BrainModuleConfig):
        super().__init__()
        self.config = config
        c = config
        self.spatial = SpatialAttention(c.n_channels, c.spatial_channels, c.fourier_freqs, c.spatial_dropout)
        if c.positions is not None:
            self.spatial.positions.copy_(torch.tensor(c.positions, dtype=torch.float32))
        self.initial = nn.Conv1d(c.spatial_channels, c.spatial_channels, 1)
        self.subject_layer = SubjectLayer(c.spatial_channels, c.n_subjects, c.subject_dropout)
        blocks = []
        for k in range(c.depth):
            c_in = c.spatial_channels if k == 0 else c.hidden
            dil = block_dilations(k, c.dilation_period)
            blocks.append(ConvBlock(c_in, c.hidden, c.kernel_size, dil, c.glu, c.dropout, c.causal))
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.Conv1d(c.hidden, c.out_channels, 1), nn.GELU())
        # causal: the unpadded stack leaves exactly n_frames frames, the last ones of the window
        self.aggregate = TemporalAggregation(c.aggregation, c.n_frames, c.out_channels)
        self.clip_head = _head(c.out_channels, c.head_hidden, c.dim)
        self.mse_head = _head(c.out_channels, c.head_hidden, c.dim)

    def mask_sensors(self, indices) -> None:
        """Run without the sensors at ``indices`` (missing or bad): the spatial attention gives them zero
        weight and renormalises over the others, so their input values do not matter (feed zeros)."""
        keep = torch.ones(self.config.n_channels, dtype=torch.bool)
        keep[torch.as_tensor(list(indices), dtype=torch.long)] = False
        self.spatial.mask(keep)

    def trunk(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        x = self.initial(self.spatial(x))
        x = self.subject_layer(x, subject)
        x = self.final(self.blocks(x))
        return self.aggregate(x)

    def forward_heads(
        self, x: torch.Tensor, subject: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.trunk(x, subject)
        return self.clip_head(z), self.mse_head(z)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        z = self.trunk(x, subject)
        return self.clip_head(z) if self.config.output_head == "clip" else self.mse_head(z)

    def export_form(self) -> nn.Module:
        """The same function arranged for ONNX Runtime (see :mod:`models.encoders.export_form`)."""
        from brainstream.models.encoders.export_form import BrainModuleExportForm

        return BrainModuleExportForm(self)
