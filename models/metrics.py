"""Zero-shot N-way retrieval metrics: top-k accuracy, median rank, chance.

A trial is scored by the rank (1 = best) of its true image among ``N`` candidates by cosine similarity. With a
test set of exactly ``N`` images the candidates are the whole test set; with more, each trial draws ``N − 1``
distractors at random (seeded) besides its true image, as in the THINGS papers; ``n_way=None`` uses the
whole set.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_ranks(
    pred: np.ndarray,
    candidates: np.ndarray,
    true_index: np.ndarray,
    n_way: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Rank (1-based) of each trial's true candidate among ``n_way`` candidates.

    Parameters
    ----------
    pred : array, shape (n_trials, D)
        Predicted embeddings.
    candidates : array, shape (n_candidates, D)
        Embeddings of the candidate images (each image once).
    true_index : array of int, shape (n_trials,)
        Row of ``candidates`` that is each trial's image.
    n_way : int | None
        Number of candidates per trial (true image included); None or ≥ n_candidates: all of them.
    seed : int
        Seed of the distractor draw when ``n_way < n_candidates``.
    """
    pred, candidates = np.asarray(pred), np.asarray(candidates)
    true_index = np.asarray(true_index, dtype=np.int64)
    if pred.ndim != 2 or candidates.ndim != 2 or pred.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"retrieval: pred (n, D) and candidates (N, D) must share D; got {pred.shape}, {candidates.shape}"
        )
    if len(true_index) != len(pred):
        raise ValueError(f"retrieval: {len(pred)} predictions but {len(true_index)} true indices")
    n_cand = len(candidates)
    if n_cand < 2:
        raise ValueError(f"retrieval needs at least 2 candidate images, got {n_cand}")
    if true_index.size and (true_index.min() < 0 or true_index.max() >= n_cand):
        raise ValueError(
            f"retrieval: true indices must lie in [0, {n_cand}), got {true_index.min()}..{true_index.max()}"
        )
    sim = _unit(pred) @ _unit(candidates).T  # (n, N)
    true_sim = sim[np.arange(len(pred)), true_index]
    if n_way is None or n_way >= n_cand:
        return 1 + (sim > true_sim[:, None]).sum(axis=1)
    if n_way < 2:
        raise ValueError(f"n_way must be ≥ 2, got {n_way}")
    rng = np.random.default_rng(seed)
    ranks = np.empty(len(pred), dtype=np.int64)
    for i in range(len(pred)):
        others = np.delete(np.arange(n_cand), true_index[i])
        chosen = rng.choice(others, size=n_way - 1, replace=False)
        ranks[i] = 1 + int((sim[i, chosen] > true_sim[i]).sum())
    return ranks


def effective_n_way(n_way: int | None, n_candidates: int) -> int:
    return n_candidates if n_way is None or n_way >= n_candidates else int(n_way)


def retrieval_metrics(
    pred: np.ndarray,
    candidates: np.ndarray,
    true_index: np.ndarray,
    n_way: int | None = 200,
    seed: int = 0,
) -> dict[str, float | int]:
    """``{"n_way", "top1", "top5", "median_rank", "chance_top1", "chance_top5"}`` (accuracies in [0, 1])."""
    ranks = retrieval_ranks(pred, candidates, true_index, n_way=n_way, seed=seed)
    n = effective_n_way(n_way, len(candidates))
    return {
        "n_way": n,
        "top1": float(np.mean(ranks <= 1)) if ranks.size else float("nan"),
        "top5": float(np.mean(ranks <= 5)) if ranks.size else float("nan"),
        "median_rank": float(np.median(ranks)) if ranks.size else float("nan"),
        "chance_top1": 1.0 / n,
        "chance_top5": min(5, n) / n,
    }
