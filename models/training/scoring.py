"""Scoring a trained encoder on a split: embeddings of windows and retrieval with its ridge baseline.

Shared by training (the test report written at the end of a run) and :mod:`brainstream.models.evaluation`
(zero-shot, leave-one-subject-out and time-resolved evaluation), so neither imports the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from brainstream.models.metrics import retrieval_metrics
from brainstream.models.training.data import DataError, EncodingData, average_repetitions, candidates_for


@torch.no_grad()
def encode(
    model: nn.Module,
    X: np.ndarray,
    subjects: np.ndarray | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Embeddings ``(n, D)`` of windows ``X (n, C, T)`` in eval mode (``subjects=None``: unseen subject)."""
    model.eval()
    outs = []
    for s in range(0, len(X), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(X[s : s + batch_size])).to(device)
        subj = (
            None
            if subjects is None
            else torch.from_numpy(np.asarray(subjects[s : s + batch_size])).to(device)
        )
        outs.append(model(x, subj).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


SUBJECT_UNSEEN = -1


def predict(model: nn.Module, X: np.ndarray, subjects: np.ndarray | None = None) -> np.ndarray:
    """Embeddings of ``X``; rows whose subject is ``SUBJECT_UNSEEN`` (-1) use the mean subject layer."""
    if subjects is None:
        return encode(model, X, None)
    subjects = np.asarray(subjects)
    out = None
    for seen in (True, False):
        rows = subjects >= 0 if seen else subjects < 0
        if not rows.any():
            continue
        part = encode(model, X[rows], subjects[rows] if seen else None)
        if out is None:
            out = np.zeros((len(X), part.shape[1]), np.float32)
        out[rows] = part
    return out if out is not None else np.zeros((0, 0), np.float32)


def true_rows(ids: np.ndarray, cand_ids: list[str]) -> np.ndarray:
    index = {c: k for k, c in enumerate(cand_ids)}
    return np.array([index[i] for i in ids], dtype=np.int64)


def retrieval_scores(pred, cand, true, n_way, seed) -> dict[str, Any]:
    return retrieval_metrics(pred, cand, true, n_way=n_way, seed=seed)


def _report(
    test: EncodingData,
    model_pred: np.ndarray,
    ridge_pred: np.ndarray | None,
    avg: EncodingData,
    model_avg: np.ndarray,
    ridge_avg: np.ndarray | None,
    n_way: int | None,
    seed: int,
) -> dict[str, Any]:
    cand, _, cand_ids = candidates_for(test)
    true = true_rows(test.image_ids, cand_ids)
    true_avg = true_rows(avg.image_ids, cand_ids)
    single = retrieval_scores(model_pred, cand, true, n_way, seed)
    averaged = retrieval_scores(model_avg, cand, true_avg, n_way, seed)
    out: dict[str, Any] = dict(single)
    out["ridge"] = None
    out["averaged"] = {"top1": averaged["top1"], "top5": averaged["top5"], "ridge": None}
    if ridge_pred is not None and ridge_avg is not None:
        r = retrieval_scores(ridge_pred, cand, true, n_way, seed)
        ra = retrieval_scores(ridge_avg, cand, true_avg, n_way, seed)
        out["ridge"] = {"top1": r["top1"], "top5": r["top5"]}
        out["averaged"]["ridge"] = {"top1": ra["top1"], "top5": ra["top5"]}
    return out


def evaluate_split(
    model: nn.Module,
    test: EncodingData,
    ridge: nn.Module | None = None,
    n_way: int = 200,
    seed: int = 0,
    subject_index: np.ndarray | None = None,
    ridge_subject_index: np.ndarray | None = None,
) -> dict[str, Any]:
    """Retrieval on the test trials ``test`` (all candidates = its unique images).

    ``subject_index`` maps each trial to the model's subject layer (-1: unseen subject); default
    ``test.subjects``; ``ridge_subject_index`` does the same for the ridge's per-subject maps (default:
    ``subject_index``). Returns ``{"metrics": issue JSON (n_way), "whole_set": same with N = all test
    images, "per_subject": {name: issue JSON}}`` (per subject only with several subjects).
    """
    if len(test.X) == 0:
        raise DataError("the test split is empty: nothing to evaluate")
    if len(np.unique(test.image_ids)) < 2:
        raise DataError("the test split has fewer than 2 distinct images: retrieval needs at least 2")
    subj = test.subjects if subject_index is None else np.asarray(subject_index)
    avg = average_repetitions(test)
    avg_subj = subj[_first_rows(test, avg)]
    model_pred = predict(model, test.X, subj)
    model_avg = predict(model, avg.X, avg_subj)
    ridge_pred = ridge_avg = None
    if ridge is not None:
        rsubj = subj if ridge_subject_index is None else np.asarray(ridge_subject_index)
        ridge_pred = predict(ridge, test.X, rsubj)
        ridge_avg = predict(ridge, avg.X, rsubj[_first_rows(test, avg)])
    result = {
        "metrics": _report(test, model_pred, ridge_pred, avg, model_avg, ridge_avg, n_way, seed),
        "whole_set": _report(test, model_pred, ridge_pred, avg, model_avg, ridge_avg, None, seed),
    }
    if len(np.unique(test.subjects)) > 1:
        per = {}
        for s in np.unique(test.subjects):
            rows, arows = test.subjects == s, avg.subjects == s
            per[test.subject_names[s]] = _report(
                test.subset(rows),
                model_pred[rows],
                None if ridge_pred is None else ridge_pred[rows],
                avg.subset(arows),
                model_avg[arows],
                None if ridge_avg is None else ridge_avg[arows],
                n_way,
                seed,
            )
        result["per_subject"] = per
    return result


def _first_rows(test: EncodingData, avg: EncodingData) -> np.ndarray:
    """Row of ``test`` that each averaged trial came from (same subject and image)."""
    key = {(s, i): k for k, (s, i) in enumerate(zip(test.subjects, test.image_ids, strict=True))}
    return np.array([key[(s, i)] for s, i in zip(avg.subjects, avg.image_ids, strict=True)], dtype=np.int64)
