"""Honest zero-shot evaluation: N-way retrieval with chance and the ridge baseline beside every number.

- :func:`evaluate_split`: single-trial and repetition-averaged retrieval on a test split, N-way (200 by
  default) and against the whole test set, per subject when there are several.
- :func:`leave_one_subject_out`: train on all subjects but one, test on the held-out subject's test images
  (the model uses its mean subject layer / token for the unseen subject); ridge on the same split.
- :func:`time_resolved`: 250 ms sliding windows and growing windows. The ridge baseline is refitted on each
  window; the trained network sees the whole window with everything outside the analysed window set to zero
  (the robust-scaled median: "no information"), which shows when its evidence arrives without retraining.
  :func:`plot_time_resolved` draws both with chance.

Every metrics dict follows the issue's JSON: ``{"n_way", "top1", "top5", "median_rank", "chance_top1",
"chance_top5", "ridge": {"top1", "top5"}, "averaged": {"top1", "top5", "ridge": {...}}}`` (accuracies are
fractions in [0, 1]).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from brainstream.models.channels import DEFAULT_MAX_MISSING
from brainstream.models.training.data import DataError, EncodingData, candidates_for
from brainstream.models.training.scoring import (
    SUBJECT_UNSEEN,
    evaluate_split,
    predict,
    retrieval_scores,
    true_rows,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- leave one subject out
def only_subjects(data: EncodingData, keep: list[str]) -> EncodingData:
    """Rows of the named subjects, re-indexed so subject layers cover exactly them."""
    idx = [data.subject_names.index(k) for k in keep]
    rows = np.isin(data.subjects, idx)
    sub = data.subset(rows)
    remap = {old: new for new, old in enumerate(idx)}
    return replace(
        sub, subjects=np.array([remap[s] for s in sub.subjects], np.int64), subject_names=list(keep)
    )


def leave_one_subject_out(config, data: EncodingData, progress: bool = True) -> dict[str, Any]:
    """Train on all subjects but one (selection on their validation images), test on the held-out one.

    Returns ``{"subjects": {held_out: issue JSON}, "mean": {...}}``; ridge is fitted on the same training
    subjects. Needs at least two subjects.
    """
    from brainstream.models.training.trainer import fit_ridge_encoder, train

    names = list(data.subject_names)
    if len(names) < 2:
        raise DataError(f"leave-one-subject-out needs at least 2 subjects, the data has {len(names)}")
    data.check()
    per: dict[str, Any] = {}
    for held in names:
        rest = only_subjects(data, [n for n in names if n != held])
        result = train(config, data=rest, progress=progress, evaluate_test=False)
        ridge = None
        if config.evaluation.ridge:
            # an unseen subject gets one linear map fitted on all training subjects
            ridge, _ = fit_ridge_encoder(
                rest.split("train"), config.evaluation.ridge_alphas, config.seed, False
            )
        test = only_subjects(data, [held]).split("test")
        unseen = np.full(len(test.X), SUBJECT_UNSEEN)
        report = evaluate_split(
            result.model, test, ridge, config.evaluation.n_way, config.evaluation.seed, unseen
        )
        per[held] = report["metrics"]
    return {"subjects": per, "mean": _mean_metrics(list(per.values()))}


def _mean_metrics(items: list[dict[str, Any]]) -> dict[str, Any]:
    def avg(get):
        vals = [get(m) for m in items]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    out = {k: avg(lambda m, k=k: m[k]) for k in ("top1", "top5", "median_rank", "chance_top1", "chance_top5")}
    out["n_way"] = items[0]["n_way"]
    out["ridge"] = {k: avg(lambda m, k=k: (m["ridge"] or {}).get(k)) for k in ("top1", "top5")}
    out["averaged"] = {
        "top1": avg(lambda m: m["averaged"]["top1"]),
        "top5": avg(lambda m: m["averaged"]["top5"]),
        "ridge": {k: avg(lambda m, k=k: (m["averaged"]["ridge"] or {}).get(k)) for k in ("top1", "top5")},
    }
    return out


# ------------------------------------------------------------------------------------------ time-resolved
def time_windows(tmin: float, n_times: int, sfreq: float, length: float = 0.25, step: float = 0.05):
    """``(kind, t0, t1, sample_slice)`` for 250 ms sliding windows and growing windows from ``tmin``."""
    out = []
    n_len = max(1, int(round(length * sfreq)))
    n_step = max(1, int(round(step * sfreq)))
    for s in range(0, n_times - n_len + 1, n_step):
        out.append(("sliding", tmin + s / sfreq, tmin + (s + n_len) / sfreq, slice(s, s + n_len)))
    ends = list(range(n_len, n_times + 1, n_step))
    if ends and ends[-1] != n_times:
        ends.append(n_times)  # the last growing window is always the whole epoch
    for e in ends:
        out.append(("growing", tmin, tmin + e / sfreq, slice(0, e)))
    return out


def time_resolved(
    model: nn.Module,
    train: EncodingData,
    test: EncodingData,
    n_way: int = 200,
    seed: int = 0,
    subject_index: np.ndarray | None = None,
    ridge_alphas: list[float] | None = None,
    progress: bool = True,
    step: float = 0.1,
) -> list[dict[str, Any]]:
    """Single-trial top-1/top-5 per window for the network (masked input) and a per-window ridge refit."""
    from tqdm import tqdm

    from brainstream.models.encoders import fit_ridge
    from brainstream.models.encoders.ridge import DEFAULT_ALPHAS

    cand, _, cand_ids = candidates_for(test)
    true = true_rows(test.image_ids, cand_ids)
    subj = test.subjects if subject_index is None else np.asarray(subject_index)
    rows = []
    windows = time_windows(test.tmin, test.n_times, test.sfreq, step=step)
    for kind, t0, t1, sl in tqdm(windows, desc="time-resolved", unit="window", disable=not progress):
        masked = np.zeros_like(test.X)
        masked[:, :, sl] = test.X[:, :, sl]
        m = retrieval_scores(predict(model, masked, subj), cand, true, n_way, seed)
        fit = fit_ridge(
            train.X[:, :, sl],
            train.targets,
            alphas=ridge_alphas or DEFAULT_ALPHAS[::2],
            groups=train.image_ids,
            n_folds=3,
            scoring="rank",
        )
        ridge_pred = test.X[:, :, sl].reshape(len(test.X), -1) @ fit.weight + fit.bias
        r = retrieval_scores(ridge_pred, cand, true, n_way, seed)
        rows.append(
            {
                "kind": kind,
                "tmin": round(t0, 4),
                "tmax": round(t1, 4),
                "top1": m["top1"],
                "top5": m["top5"],
                "ridge": {"top1": r["top1"], "top5": r["top5"]},
                "chance_top5": m["chance_top5"],
                "n_way": m["n_way"],
            }
        )
    return rows


def plot_time_resolved(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Top-5 against window end (growing) / centre (sliding), network vs ridge vs chance; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, kind in zip(axes, ("sliding", "growing"), strict=True):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        x = [(r["tmin"] + r["tmax"]) / 2 if kind == "sliding" else r["tmax"] for r in sel]
        ax.plot(x, [100 * r["top5"] for r in sel], "o-", label="network (masked input)")
        ax.plot(x, [100 * r["ridge"]["top5"] for r in sel], "s--", label="ridge (refit per window)")
        ax.axhline(100 * sel[0]["chance_top5"], color="gray", ls=":", label="chance")
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("window centre (s)" if kind == "sliding" else "window end (s)")
        ax.set_title(f"{kind} windows ({sel[0]['n_way']}-way)" if kind == "sliding" else "growing windows")
    axes[0].set_ylabel("top-5 accuracy (%)")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- checkpoints
def align_to_checkpoint(
    data: EncodingData,
    meta: Any,
    model: nn.Module,
    bad: Sequence[str] = (),
    max_missing: float = DEFAULT_MAX_MISSING,
    positions: np.ndarray | None = None,
) -> EncodingData:
    """``data`` with the checkpoint's channels in its order: the same plan as the live decoder's
    (:func:`brainstream.models.channels.plan_channels`). A brain module ``model`` is masked in place for the
    sensors without data; other encoders get them interpolated (from ``positions``, else the checkpoint's).
    Each missing / bad sensor is named once in a warning."""
    from brainstream.models.channels import plan_channels, repair_method_for

    if list(data.ch_names) == list(meta.ch_names) and not bad:
        return data
    method = repair_method_for(meta.arch)
    if positions is None and meta.positions is not None:
        positions = np.asarray(meta.positions, dtype=np.float64)
    plan = plan_channels(
        data.ch_names,
        meta.ch_names,
        method,
        bad=bad,
        positions=positions,
        max_missing=max_missing,
        what="checkpoint",
        source="the recordings",
    )
    plan.warn(logger, source="the recordings")
    if plan.absent and method == "mask":
        model.mask_sensors(plan.repair.rows)
    X = plan.repair.apply(plan.match.take(data.X).astype(np.float32, copy=False))
    positions = None if meta.positions is None else np.asarray(meta.positions, dtype=np.float64)
    return replace(data, X=X, ch_names=list(meta.ch_names), positions=positions)


def evaluate_checkpoint(
    checkpoint: str | Path,
    paths: list[str] | str,
    kind: str = "auto",
    subjects: list[str] | None = None,
    n_way: int = 200,
    time_resolved_plot: str | Path | None = None,
    progress: bool = True,
    loaded: tuple[nn.Module, Any] | None = None,
    seed: int = 0,
    precision: str = "fp32",
    bad_channels: list[str] | None = None,
    max_missing: float = DEFAULT_MAX_MISSING,
) -> dict[str, Any]:
    """Evaluate a checkpoint folder on recordings (what ``brainstream evaluate`` runs).

    The recordings' channels are matched to the checkpoint's by name as the live decoder matches a stream's
    (:func:`align_to_checkpoint`): extra channels are ignored, CTF names match without their system suffix,
    and sensors that are missing (up to ``max_missing``) or in ``bad_channels`` are masked by a brain module
    or interpolated for other encoders.

    ``precision="bf16"`` computes the model's embeddings in bfloat16 (fast batched CPU inference on CPUs with
    bf16 units, refused on others; see :mod:`models.runtime.precision`); the ridge baseline stays fp32.

    Subjects the checkpoint was trained on use their own subject layer ("within"); others use the mean
    layer ("unseen", i.e. leave-one-subject-out for a model trained on other subjects). The ridge baseline
    is the checkpoint's own ``ridge/`` (same training data) when present, else one fitted on the data's
    training split. Test images the checkpoint was trained on are refused.
    """
    import json

    from brainstream.models.checkpoint import CheckpointError, load_checkpoint
    from brainstream.models.runtime.precision import check_precision
    from brainstream.models.runtime.torch_runtime import with_precision
    from brainstream.models.training.loading import load_for_checkpoint

    check_precision(precision, "cpu")  # before any loading: a refusal should cost nothing
    checkpoint = Path(checkpoint)
    model, meta = loaded if loaded is not None else load_checkpoint(checkpoint)
    data = load_for_checkpoint(meta, paths, kind=kind, subjects=subjects, progress=progress)
    data = align_to_checkpoint(data, meta, model, bad=bad_channels or (), max_missing=max_missing)
    model = with_precision(model, precision)
    if abs(data.sfreq - meta.sfreq) > 1e-6 or data.n_times != meta.n_times:
        raise CheckpointError(
            f"the data gives {data.n_times} samples at {data.sfreq:g} Hz per window, the checkpoint expects "
            f"{meta.n_times} at {meta.sfreq:g} Hz; load it with the checkpoint's preprocessing and window"
        )
    if data.space != meta.space:
        raise CheckpointError(
            f"embedding space mismatch: the checkpoint predicts '{meta.space}' but the data's gallery is "
            f"'{data.space}'; evaluate with a gallery built in '{meta.space}'"
        )
    data.check()
    from brainstream.models.training.trainer import TRAIN_IMAGES_FILE

    trained_on = checkpoint / TRAIN_IMAGES_FILE
    if trained_on.is_file():
        seen = set(json.loads(trained_on.read_text()))
        leaked = sorted(set(data.image_ids[data.splits == "test"]) & seen)
        if leaked:
            raise DataError(
                f"{len(leaked)} test images were used to train this checkpoint (e.g. {leaked[:5]}); "
                "zero-shot evaluation needs unseen images: use another test set or retrain without them"
            )
    index = {name: k for k, name in enumerate(meta.subjects)}
    test = data.split("test")
    subject_index = np.array([index.get(data.subject_names[s], SUBJECT_UNSEEN) for s in test.subjects])
    ridge_subject_index = subject_index
    if (checkpoint / "ridge").is_dir():
        ridge, _ = load_checkpoint(checkpoint / "ridge")
        ridge_source = "the checkpoint's ridge (fitted on the model's training data)"
    else:
        from brainstream.models.training.trainer import fit_ridge_encoder

        ridge, _ = fit_ridge_encoder(data.split("train"), seed=seed)
        ridge_subject_index = test.subjects  # fitted on this data: its own subject order
        ridge_source = "fitted on the evaluation data's training split"
    report = evaluate_split(model, test, ridge, n_way, seed, subject_index, ridge_subject_index)
    out: dict[str, Any] = dict(report["metrics"])
    out["whole_set"] = report["whole_set"]
    out["ridge_source"] = ridge_source
    out["precision"] = precision
    modes = {
        data.subject_names[s]: ("within" if data.subject_names[s] in index else "unseen")
        for s in test.subjects
    }
    if "per_subject" in report:
        out["per_subject"] = {k: {**v, "mode": modes[k]} for k, v in report["per_subject"].items()}
    else:
        name = data.subject_names[int(test.subjects[0])]
        out["per_subject"] = {name: {**report["metrics"], "mode": modes[name]}}
    if time_resolved_plot is not None:
        rows = time_resolved(model, data.split("train"), test, n_way, seed, subject_index, progress=progress)
        out["time_resolved"] = rows
        out["time_resolved_plot"] = str(
            plot_time_resolved(rows, time_resolved_plot, title=str(checkpoint.name))
        )
    return out
