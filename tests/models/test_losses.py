"""CLIP/InfoNCE, MSE and the combined loss; retrieval metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainstream.models.losses import ClipLoss, CombinedLoss, MSELoss
from brainstream.models.metrics import retrieval_metrics, retrieval_ranks


def _targets(n: int = 8, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1
    )


def test_clip_loss_matches_manual_infonce():
    t = _targets()
    p = t + 0.3 * _targets(seed=1)
    loss = ClipLoss(init_temperature=0.1, symmetric=False)(p, t)
    logits = 10.0 * torch.nn.functional.normalize(p, dim=1) @ t.T
    manual = torch.nn.functional.cross_entropy(logits, torch.arange(8))
    assert torch.allclose(loss, manual, atol=1e-5)
    sym = ClipLoss(init_temperature=0.1, symmetric=True)(p, t)
    manual_t = torch.nn.functional.cross_entropy(logits.T, torch.arange(8))
    assert torch.allclose(sym, 0.5 * (manual + manual_t), atol=1e-5)


def test_clip_loss_prefers_aligned_and_learns_temperature():
    t = _targets()
    crit = ClipLoss()
    assert crit.temperature == pytest.approx(0.07, rel=1e-4)
    aligned, random = crit(t, t), crit(_targets(seed=5), t)
    assert aligned < random
    aligned.backward()
    assert crit.log_scale.grad is not None and crit.log_scale.grad.abs() > 0
    frozen = ClipLoss(learn_temperature=False)
    assert not frozen.log_scale.requires_grad


def test_clip_loss_duplicate_images_are_not_negatives():
    t = _targets(4)
    t_dup = torch.cat([t, t[:1]])  # image 0 twice in the batch
    p = t_dup.clone()
    loss = ClipLoss(init_temperature=0.05, symmetric=False)(p, t_dup)
    # rows 0 and 4 put half their label mass on each copy of image 0: loss of the aligned batch stays low
    logits = 20.0 * p @ t_dup.T
    labels = torch.eye(5)
    labels[0, 4] = labels[4, 0] = 1
    labels = labels / labels.sum(1, keepdim=True)
    manual = torch.sum(-labels * torch.log_softmax(logits, 1), 1).mean()
    assert torch.allclose(loss, manual, atol=1e-5)


def test_soft_clip_uses_soft_targets():
    t = _targets()
    p = _targets(seed=3)
    hard, soft = ClipLoss(symmetric=False)(p, t), ClipLoss(symmetric=False, soft=True)(p, t)
    assert torch.isfinite(soft) and not torch.allclose(hard, soft)


def test_combined_loss_weights():
    t = _targets()
    c, m = _targets(seed=1), _targets(seed=2)
    clip, mse = ClipLoss(), MSELoss()
    total, parts = CombinedLoss(1.0, clip, mse)(c, m, t)
    assert torch.allclose(total, clip(c, t)) and "mse" not in parts
    total, parts = CombinedLoss(0.0, clip, mse)(c, m, t)
    assert torch.allclose(total, mse(m, t)) and "clip" not in parts
    total, parts = CombinedLoss(0.25, clip, mse)(c, m, t)
    assert total.item() == pytest.approx(0.25 * parts["clip"] + 0.75 * parts["mse"], rel=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CombinedLoss(1.5)
    with pytest.raises(ValueError, match="batch, D"):
        clip(c[:, :3], t)


def test_retrieval_ranks_whole_set_and_n_way():
    cand = np.eye(6, dtype=np.float32)
    pred = cand[[0, 1, 2]] + np.array(
        [[0, 0, 0, 0, 0, 0], [0.0, 0.5, 0.9, 0, 0, 0], [0, 0, -0.5, 0.6, 0.7, 0]]
    )
    ranks = retrieval_ranks(pred, cand, np.array([0, 1, 2]))
    assert ranks.tolist() == [1, 1, 3]
    # 2-way: trials 0 and 1 always win; trial 2 loses only when its one distractor is image 3 or 4
    r2 = retrieval_ranks(pred, cand, np.array([0, 1, 2]), n_way=2, seed=1)
    assert set(r2.tolist()) <= {1, 2} and r2[0] == 1 and r2[1] == 1
    m = retrieval_metrics(pred, cand, np.array([0, 1, 2]), n_way=200)
    assert m["n_way"] == 6 and m["top1"] == pytest.approx(2 / 3) and m["top5"] == 1.0
    assert m["chance_top1"] == pytest.approx(1 / 6) and m["chance_top5"] == pytest.approx(5 / 6)
    assert m["median_rank"] == 1.0


def test_retrieval_random_predictions_sit_at_chance():
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((300, 32))
    pred = rng.standard_normal((2000, 32))
    true = rng.integers(0, 300, 2000)
    m = retrieval_metrics(pred, cand, true, n_way=50, seed=0)
    assert m["n_way"] == 50 and m["chance_top5"] == pytest.approx(0.1)
    se = math.sqrt(0.1 * 0.9 / 2000)
    assert abs(m["top5"] - 0.1) < 4 * se
    assert 20 <= m["median_rank"] <= 31


def test_retrieval_bad_input():
    with pytest.raises(ValueError, match="share D"):
        retrieval_ranks(np.zeros((2, 3)), np.zeros((4, 5)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        retrieval_ranks(np.zeros((2, 3)), np.zeros((4, 3)), np.array([0, 7]))
