"""Contrastive and regression losses for brain → image-embedding encoders.

- :class:`ClipLoss`: InfoNCE over the batch with a learnable temperature (initial 1/0.07), optionally
  symmetric (brain→image and image→brain), optionally SoftCLIP (soft targets from image-image similarity).
- :class:`MSELoss`: mean squared error on the embedding.
- :class:`CombinedLoss`: ``λ·CLIP(clip_head) + (1 − λ)·MSE(mse_head)`` as in Benchetrit et al. 2023.

Duplicate images in a batch are not negatives of each other: their targets are identical, so the hard-label
CLIP loss spreads the target over every column whose image equals the row's image.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return functional.normalize(x, dim=-1, eps=1e-8)


class ClipLoss(nn.Module):
    """InfoNCE between brain embeddings and image embeddings with a learnable temperature.

    Parameters
    ----------
    init_temperature : float
        Initial temperature (the logit scale starts at ``1 / init_temperature``).
    learn_temperature : bool
        Whether the logit scale is a trained parameter.
    symmetric : bool
        Average the brain→image and image→brain cross-entropies (CLIP) instead of brain→image only.
    soft : bool
        SoftCLIP: the target distribution of a row is ``softmax(target_i · target_j / τ)`` instead of one-hot.
    max_scale : float
        The logit scale is clamped to this value (as in CLIP) to keep training stable.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
        symmetric: bool = True,
        soft: bool = False,
        max_scale: float = 100.0,
    ):
        super().__init__()
        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        log_scale = torch.tensor(math.log(1.0 / init_temperature))
        self.log_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)
        self.symmetric = symmetric
        self.soft = soft
        self.max_log_scale = math.log(max_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.log_scale.detach().clamp(max=self.max_log_scale).exp())

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 2:
            raise ValueError(
                f"ClipLoss: pred and target must both be (batch, D); got {pred.shape}, {target.shape}"
            )
        p, t = _normalise(pred), _normalise(target)
        scale = self.log_scale.clamp(max=self.max_log_scale).exp()
        logits = scale * p @ t.T
        with torch.no_grad():
            tt = t @ t.T
            if self.soft:
                labels = torch.softmax(scale.detach() * tt, dim=1)
            else:
                same = (tt > 1 - 1e-6).float()  # duplicates of the same image share the label mass
                labels = same / same.sum(dim=1, keepdim=True)
        loss = torch.sum(-labels * torch.log_softmax(logits, dim=1), dim=1).mean()
        if self.symmetric:
            loss_t = torch.sum(-labels.T * torch.log_softmax(logits.T, dim=1), dim=1).mean()
            loss = 0.5 * (loss + loss_t)
        return loss


class MSELoss(nn.Module):
    """Mean squared error between the prediction and the (optionally L2-normalised) target."""

    def __init__(self, normalise_target: bool = False):
        super().__init__()
        self.normalise_target = normalise_target

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.normalise_target:
            target = _normalise(target)
        return functional.mse_loss(pred, target)


class CombinedLoss(nn.Module):
    """``λ · CLIP(clip_out, target) + (1 − λ) · MSE(mse_out, target)``.

    ``forward`` returns the total and a dict of the parts (floats) for logging. A term whose weight is zero is
    not computed, so an MSE-only model never trains the CLIP temperature and vice versa.
    """

    def __init__(self, lam: float = 1.0, clip: ClipLoss | None = None, mse: MSELoss | None = None):
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"λ (clip weight) must lie in [0, 1], got {lam}")
        self.lam = float(lam)
        self.clip = clip if clip is not None else ClipLoss()
        self.mse = mse if mse is not None else MSELoss()

    def forward(
        self, clip_out: torch.Tensor, mse_out: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = clip_out.new_zeros(())
        parts: dict[str, float] = {}
        if self.lam > 0:
            c = self.clip(clip_out, target)
            total = total + self.lam * c
            parts["clip"] = float(c.detach())
        if self.lam < 1:
            m = self.mse(mse_out, target)
            total = total + (1 - self.lam) * m
            parts["mse"] = float(m.detach())
        parts["total"] = float(total.detach())
        return total, parts
