"""Ridge regression from flattened windows to embeddings: the "linear decoder" baseline.

Closed form with a cross-validated penalty. One eigendecomposition per fold serves every penalty on the grid:
with ``K = X Xᵀ = U S Uᵀ`` (dual form, used when features outnumber trials) the held-out predictions for a
penalty ``a`` are ``K_val U (S + a)⁻¹ Uᵀ Y``; with ``Xᵀ X = V S Vᵀ`` (primal form) they are
``X_val V (S + a)⁻¹ Vᵀ Xᵀ Y``. Folds are grouped by image so repetitions of one image never straddle a fold.
Penalties are relative to the mean squared norm of a trial, so one grid fits any data scale.

:class:`RidgeEncoder` holds the fitted map as a torch module (``(batch, channels, times) → (batch, D)``) so
the runtime, ONNX export and checkpoints treat it like any other encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from brainstream.models.config_base import StrictModel

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))


class RidgeConfig(StrictModel):
    name: Literal["ridge"] = "ridge"
    n_channels: int = Field(gt=0)
    n_times: int = Field(gt=0)
    dim: int = Field(gt=0)
    n_subjects: int = Field(default=1, ge=1, description="one map per subject when > 1")


@dataclass
class RidgeFit:
    weight: np.ndarray  # (p, D)
    bias: np.ndarray  # (D,)
    alpha: float  # relative penalty chosen
    alphas: list[float] = field(default_factory=list)
    cv_scores: list[float] = field(default_factory=list)  # lower is better


def _eig_solver(Xtr: np.ndarray, Ytr: np.ndarray):
    """``predict(X_new, alpha)``, ``weights(alpha)`` and the penalty scale from one eigendecomposition."""
    n, p = Xtr.shape
    if p > n:
        K = (Xtr @ Xtr.T).astype(np.float64)
        s, U = np.linalg.eigh(K)
        s = np.clip(s, 0, None)
        UtY = U.T @ Ytr.astype(np.float64)

        def predict(Xnew: np.ndarray, alpha: float) -> np.ndarray:
            coef = U @ (UtY / (s + alpha)[:, None])  # dual coefficients (n, D)
            return (Xnew @ Xtr.T).astype(np.float64) @ coef

        def weights(alpha: float) -> np.ndarray:
            return (Xtr.T.astype(np.float64) @ (U @ (UtY / (s + alpha)[:, None]))).astype(np.float32)

    else:
        G = (Xtr.T @ Xtr).astype(np.float64)
        s, V = np.linalg.eigh(G)
        s = np.clip(s, 0, None)
        VtXtY = V.T @ (Xtr.T.astype(np.float64) @ Ytr.astype(np.float64))

        def weights(alpha: float) -> np.ndarray:
            return (V @ (VtXtY / (s + alpha)[:, None])).astype(np.float32)

        def predict(Xnew: np.ndarray, alpha: float) -> np.ndarray:
            return Xnew.astype(np.float64) @ weights(alpha).astype(np.float64)

    # trace / n (the mean squared norm of a trial) is the same in both forms: one grid means the same in both
    return predict, weights, max(float(s.sum()) / n, 1e-12)


def _score(pred: np.ndarray, target: np.ndarray, scoring: str) -> float:
    if scoring == "mse":
        return float(np.mean((pred - target) ** 2))
    # "rank": mean normalised rank of the true row by cosine similarity among the fold's targets
    p = pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
    t = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
    sim = p @ t.T
    true = np.diag(sim)[:, None]
    return float(np.mean((sim > true).sum(axis=1) / max(1, sim.shape[1] - 1)))


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    alphas: tuple[float, ...] | list[float] = DEFAULT_ALPHAS,
    groups: np.ndarray | list | None = None,
    n_folds: int = 5,
    scoring: Literal["mse", "rank"] = "mse",
    seed: int = 0,
) -> RidgeFit:
    """Fit ``Y ≈ X W + b`` with the penalty chosen by grouped K-fold cross-validation.

    Parameters
    ----------
    X : array, shape (n, p) or (n, channels, times)
        Training inputs (flattened when 3-D).
    Y : array, shape (n, D)
        Targets (image embeddings).
    alphas : sequence of float
        Penalties relative to the mean squared norm of a (centred) training trial.
    groups : array of shape (n,), optional
        Group label per trial (image id); a group never straddles folds. Default: one group per trial.
    n_folds : int
        Number of folds (capped by the number of groups).
    scoring : "mse" | "rank"
        Held-out criterion: mean squared error or mean normalised retrieval rank.
    """
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    Y = np.asarray(Y, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(
            f"fit_ridge: X (n, p) and Y (n, D) must have the same n; got {X.shape} and {Y.shape}"
        )
    if len(X) < 2:
        raise ValueError(f"fit_ridge: need at least 2 training trials, got {len(X)}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("fit_ridge: X or Y contains NaN or Inf; clean or interpolate the data first")
    alphas = [float(a) for a in alphas]
    groups = np.arange(len(X)) if groups is None else np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    k = min(n_folds, len(uniq))
    scores = np.zeros(len(alphas))
    if k >= 2 and len(alphas) > 1:
        order = np.random.default_rng(seed).permutation(len(uniq))
        fold_of_group = np.empty(len(uniq), dtype=int)
        fold_of_group[order] = np.arange(len(uniq)) % k
        fold = fold_of_group[inv]
        for f in range(k):
            tr, va = fold != f, fold == f
            xm, ym = X[tr].mean(0), Y[tr].mean(0)
            predict, _, scale = _eig_solver(X[tr] - xm, Y[tr] - ym)
            for i, a in enumerate(alphas):
                pred = predict(X[va] - xm, a * scale) + ym
                scores[i] += _score(pred, Y[va], scoring) * va.sum()
        scores /= len(X)
    best = int(np.argmin(scores))
    xm, ym = X.mean(0), Y.mean(0)
    _, weights, scale = _eig_solver(X - xm, Y - ym)
    W = weights(alphas[best] * scale)
    b = (ym - xm @ W).astype(np.float32)
    return RidgeFit(weight=W, bias=b, alpha=alphas[best], alphas=alphas, cv_scores=scores.tolist())


class RidgeEncoder(nn.Module):
    """Fitted ridge map(s) as a module: ``(batch, channels, times) → (batch, D)``.

    With ``n_subjects > 1`` each subject has its own map (the within-subject linear decoder); ``subject=None``
    uses the mean map. With one map, ``subject`` is ignored.
    """

    def __init__(self, config: RidgeConfig):
        super().__init__()
        self.config = config
        p = config.n_channels * config.n_times
        self.weight = nn.Parameter(torch.zeros(config.n_subjects, config.dim, p))
        self.bias = nn.Parameter(torch.zeros(config.n_subjects, config.dim))

    def load_fit(self, fit: RidgeFit | list[RidgeFit]) -> RidgeEncoder:
        """Copy one fit (shared by all subjects) or one fit per subject into the module."""
        fits = fit if isinstance(fit, list) else [fit] * self.config.n_subjects
        p = self.config.n_channels * self.config.n_times
        if len(fits) != self.config.n_subjects:
            raise ValueError(f"{len(fits)} ridge fits for {self.config.n_subjects} subjects")
        with torch.no_grad():
            for k, f in enumerate(fits):
                if f.weight.shape != (p, self.config.dim):
                    raise ValueError(
                        f"ridge fit has weight {f.weight.shape}, the encoder expects ({p}, {self.config.dim})"
                    )
                self.weight[k].copy_(torch.from_numpy(np.ascontiguousarray(f.weight.T)))
                self.bias[k].copy_(torch.from_numpy(f.bias))
        return self

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.flatten(1)
        if self.config.n_subjects == 1 or subject is None:
            return flat @ self.weight.mean(dim=0).T + self.bias.mean(dim=0)
        every = torch.einsum("bp,sdp->sbd", flat, self.weight) + self.bias[:, None, :]  # (S, b, D)
        return every[subject, torch.arange(flat.shape[0], device=flat.device)]

    def forward_heads(
        self, x: torch.Tensor, subject: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.forward(x, subject)
        return z, z
