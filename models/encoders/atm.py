"""ATM-S (Li et al. 2024): channel tokens + a subject token, temporal-spatial conv, MLP projector.

``(batch, channels, times)`` EEG (+ subject index) → ``(batch, D)``. Each channel's time series is one token
(a linear map of its ``n_times`` samples to ``d_model``), a learned subject token is prepended, one
transformer encoder layer mixes channels, then a ShallowNet-style temporal-spatial convolution and a residual
MLP projector with LayerNorm give the embedding. At the published sizes (63 channels, 250 samples, D = 1024)
the model has about 3.2 M parameters.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from brainstream.models.config_base import StrictModel


class ATMConfig(StrictModel):
    """Architecture of ATM-S; defaults follow Li et al. 2024."""

    name: Literal["atm_s"] = "atm_s"
    n_channels: int = Field(gt=0)
    n_times: int = Field(gt=0, description="samples per window at the model rate")
    dim: int = Field(default=1024, gt=0)
    n_subjects: int = Field(default=1, ge=1)
    d_model: int | None = Field(default=None, description="token size (None: n_times, as published)")
    n_heads: int = Field(default=4, gt=0)
    d_ff: int = Field(default=256, gt=0)
    attn_dropout: float = Field(default=0.25, ge=0, lt=1)
    conv_channels: int = Field(default=40, gt=0)
    temporal_kernel: int = Field(default=25, gt=0)
    pool_kernel: int = Field(default=51, gt=0)
    pool_stride: int = Field(default=5, gt=0)
    conv_dropout: float = Field(default=0.5, ge=0, lt=1)
    proj_dropout: float = Field(default=0.5, ge=0, lt=1)


class _SelfAttention(nn.Module):
    """Multi-head self-attention, d_head = d_model // heads (need not divide, as in iTransformer)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = max(1, d_model // n_heads)
        inner = self.d_head * n_heads
        self.q = nn.Linear(d_model, inner)
        self.k = nn.Linear(d_model, inner)
        self.v = nn.Linear(d_model, inner)
        self.out = nn.Linear(inner, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d_head), dim=-1)
        y = torch.matmul(self.dropout(attn), v).transpose(1, 2).reshape(b, n, self.n_heads * self.d_head)
        return self.out(y)


class _EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn = _SelfAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x)))
        return self.norm2(x + self.dropout(self.ff(x)))


def _sinusoidal(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe


class ATMS(nn.Module):
    """ATM-S encoder. ``subject=None`` uses the mean subject token (for unseen subjects)."""

    def __init__(self, config: ATMConfig):
        super().__init__()
        self.config = config
        c = config
        d = c.d_model or c.n_times
        self.tokenize = nn.Linear(c.n_times, d)
        self.subject_tokens = nn.Parameter(torch.randn(c.n_subjects, d) * 0.02)
        self.register_buffer("pos_embedding", _sinusoidal(c.n_channels + 1, d), persistent=False)
        self.encoder = _EncoderLayer(d, c.n_heads, c.d_ff, c.attn_dropout)
        pooled = (d - c.temporal_kernel + 1 - c.pool_kernel) // c.pool_stride + 1
        if pooled < 1:
            raise ValueError(
                f"atm_s: token size {d} is too short for temporal_kernel {c.temporal_kernel} and pool_kernel "
                f"{c.pool_kernel}; use a longer window or smaller kernels"
            )
        k = c.conv_channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, k, (1, c.temporal_kernel)),
            nn.AvgPool2d((1, c.pool_kernel), (1, c.pool_stride)),
            nn.BatchNorm2d(k),
            nn.ELU(),
            nn.Conv2d(k, k, (c.n_channels, 1)),
            nn.BatchNorm2d(k),
            nn.ELU(),
            nn.Dropout(c.conv_dropout),
            nn.Conv2d(k, k, 1),
        )
        flat = k * pooled
        self.proj_in = nn.Linear(flat, c.dim)
        self.proj_res = nn.Sequential(nn.GELU(), nn.Linear(c.dim, c.dim), nn.Dropout(c.proj_dropout))
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.tokenize(x)  # (b, C, d)
        if subject is None:
            subj = self.subject_tokens.mean(dim=0, keepdim=True).expand(x.shape[0], -1)
        else:
            subj = self.subject_tokens[subject]
        tokens = torch.cat([subj[:, None, :], tokens], dim=1) + self.pos_embedding
        tokens = self.encoder(tokens)[:, 1:, :]  # drop the subject token
        z = self.conv(tokens.unsqueeze(1)).flatten(1)
        z = self.proj_in(z)
        return self.norm(z + self.proj_res(z))

    def forward_heads(
        self, x: torch.Tensor, subject: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.forward(x, subject)
        return z, z


__all__ = ["ATMS", "ATMConfig"]
