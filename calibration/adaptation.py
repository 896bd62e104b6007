"""Few-shot adaptation of the pretrained multi-subject encoder to one new subject, from calibration runs.

Steps (every choice is made on VALIDATION images carved from the calibration's training images; the
repeated test images are touched once, after selection):

1. the subject's robust-scaler statistics are fitted on its training windows (all runs);
2. **zero-shot**: the pretrained encoder on its subject-agnostic path (the shared subject layer trained
   by subject dropout, else the mean of the pretrained ones; no adaptation);
3. **ridge**: a ridge map fitted on the calibration training trials (penalty by grouped CV);
4. **adapted**: a new subject layer, initialised to the subject-agnostic path, trained with the shared
   trunk frozen (``subject_layer``) or lightly tuned at a lower learning rate (``light``) — the shallow
   subject adapters of MindBridge / See Through Their Minds — with time-shift + noise augmentation and,
   optionally, the read-out's last layer initialised by a ridge fit on the trunk's features; or aligned
   through anchors (``anchor``, no gradient training: the subject's training trials are anchors whose
   images' embeddings are known, and a ridge map from the shared trunk's features on the subject-agnostic
   path to the shared embedding space replaces the read-out's last layer);
5. the best of the adapted variants and ridge on validation becomes the subject's encoder; with
   ``soup_folds`` K > 1 the chosen adapted recipe is then trained on K folds of the training images (each
   early-stopped on its own held-out fold) and the K models' weights are averaged (a model soup): the
   final model has seen every calibration image, and averaging cuts the variance of few-shot training;
6. a learning curve (test accuracy against the number of calibration trials) and, for a virtual subject,
   a **reference** trained on that subject with ``reference_factor`` × the data (simulated offline).

Retrieval is N-way among the test images (``protocol.n_way``, capped by the test set), with each test
image's predicted embeddings averaged over its repetitions (main numbers) and on single trials; chance is
reported beside it. Embeddings, not signals, are averaged: much of the image information is in induced
(non-phase-locked) activity, which averaging the raw repetitions cancels.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from brainstream.calibration.protocol import AdaptationConfig, ProtocolConfig
from brainstream.models.metrics import retrieval_metrics, retrieval_ranks
from brainstream.models.training.data import DataError, EncodingData, candidates_for, carve_validation

logger = logging.getLogger(__name__)


@dataclass
class ModelResult:
    """One candidate model and its numbers (``val``: selection; ``test``: reported)."""

    name: str
    model: nn.Module
    val: dict[str, float]
    test: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdaptationResult:
    chosen: ModelResult
    zero_shot: ModelResult
    ridge: ModelResult
    adapted: ModelResult  # the best adapted variant on validation
    candidates: list[ModelResult]
    learning_curve: list[dict[str, Any]]
    n_train: int
    n_val: int
    n_test_trials: int
    n_way: int
    chance_top1: float
    chance_top5: float
    seconds: dict[str, float]
    reference: ModelResult | None = None


def one_thread(fn):
    """Run ``fn`` with one torch thread: on a few shared cores, more threads spin and run ~10× slower."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper


# ------------------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Embeddings of windows ``X`` for the model's subject 0 (single-subject models) in eval mode."""
    model.eval()
    out = []
    for s in range(0, len(X), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(X[s : s + batch_size]))
        out.append(model(x, None).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def val_score(model: nn.Module, val: EncodingData, seed: int = 0) -> dict[str, float]:
    """Single-trial retrieval among ALL validation images: mean normalised rank (lower is better)."""
    cand, true, _ = candidates_for(val)
    ranks = retrieval_ranks(predict(model, val.X), cand, true, n_way=None, seed=seed)
    n = len(cand)
    return {
        "mean_rank": float(np.mean((ranks - 1) / max(1, n - 1))),
        "top1": float(np.mean(ranks <= 1)),
        "top5": float(np.mean(ranks <= 5)),
        "n_images": n,
    }


def _image_means(pred: np.ndarray, true: np.ndarray, n_img: int) -> np.ndarray:
    """Each image's predicted embeddings averaged over its repetitions, ``(n_img, D)``."""
    counts = np.bincount(true, minlength=n_img)[:, None]
    out = np.zeros((n_img, pred.shape[1]))
    np.add.at(out, true, pred)
    return out / np.maximum(counts, 1)


def image_ranks(model: nn.Module, test: EncodingData, n_way: int, seed: int = 0) -> np.ndarray:
    """Rank of each test image (in ``candidates_for`` order) among ``n_way`` candidates, its predictions
    averaged over repetitions: :func:`score_test`'s main figure, image by image (for confidence intervals)."""
    cand, true, _ = candidates_for(test)
    averaged = _image_means(predict(model, test.X), true, len(cand))
    return retrieval_ranks(averaged, cand, np.arange(len(cand)), n_way=n_way, seed=seed)


def score_test(model: nn.Module, test: EncodingData, n_way: int, seed: int = 0) -> dict[str, Any]:
    """N-way retrieval on the test images: embeddings averaged over repetitions (main) and single trials."""
    cand, true, _ = candidates_for(test)
    pred = predict(model, test.X)
    n_img = len(cand)
    averaged_pred = _image_means(pred, true, n_img)
    averaged = retrieval_metrics(averaged_pred, cand, np.arange(n_img), n_way=n_way, seed=seed)
    single = retrieval_metrics(pred, cand, true, n_way=n_way, seed=seed)
    return {
        "top1": averaged["top1"],
        "top5": averaged["top5"],
        "median_rank": averaged["median_rank"],
        "n_way": averaged["n_way"],
        "single_trial": {"top1": single["top1"], "top5": single["top5"]},
    }


# ------------------------------------------------------------------------------------------- the models
def one_subject_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """The pretrained (multi-subject) architecture as the one-subject model of a new person."""
    arch = dict(arch, n_subjects=1)
    if "subject_dropout" in arch:
        arch["subject_dropout"] = 0.0  # one subject: its own layer is the agnostic one, nothing to drop
    return arch


def subject_model(pretrained: nn.Module, meta: Any) -> nn.Module:
    """A one-subject copy of the pretrained encoder whose subject layer is its subject-agnostic path.

    That path is the shared layer of an encoder pretrained with subject dropout, else the mean of the
    pretrained subject layers. With one subject, ``subject=None`` and ``subject=0`` are the same layer,
    so the live decoder needs no subject index.
    """
    from brainstream.models.encoders import build_encoder

    arch = one_subject_arch(meta.arch)
    if meta.positions is not None:
        arch["positions"] = meta.positions
    model = build_encoder(arch)
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    state["subject_layer.weight"] = pretrained.subject_layer.agnostic().detach().clone()[None]
    state.pop("subject_layer.shared", None)
    model.load_state_dict(state, strict=True)
    return model.eval()


def fine_tune(
    model: nn.Module,
    train: EncodingData,
    val: EncodingData,
    mode: str,
    cfg: AdaptationConfig,
    progress: bool = False,
    desc: str = "adapting",
    trunk_lr_factor: float | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the subject layer (``subject_layer``) or everything with a slower trunk (``light``).

    CLIP loss on the CLIP head, AdamW, training windows augmented (``cfg.time_shift``, ``cfg.noise_std``),
    early stopping on validation mean rank; the best epoch is kept.
    """
    from tqdm import tqdm

    from brainstream.models.losses import ClipLoss
    from brainstream.models.training.trainer import augment

    seed = cfg.seed if seed is None else int(seed)
    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    head_log = init_head_ridge(model, train, seed) if cfg.head_init == "ridge" else None
    # light: the subject layer and the read-out heads learn at lr (each subject has its own tuning), the
    # shared convolutional trunk at lr × trunk_lr_factor
    fast = ("subject_layer.",) if mode == "subject_layer" else ("subject_layer.", "clip_head.", "mse_head.")
    subject_params = [p for n, p in model.named_parameters() if n.startswith(fast)]
    trunk_params = [p for n, p in model.named_parameters() if not n.startswith(fast)]
    for p in trunk_params:
        p.requires_grad_(mode == "light")
    clip = ClipLoss(0.07, learn_temperature=True, symmetric=True)
    groups = [{"params": subject_params + list(clip.parameters()), "lr": cfg.lr}]
    if mode == "light":
        factor = cfg.trunk_lr_factors[0] if trunk_lr_factor is None else trunk_lr_factor
        groups.append({"params": trunk_params, "lr": cfg.lr * factor})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    X, Y = torch.from_numpy(train.X), torch.from_numpy(train.targets)
    gen = torch.Generator().manual_seed(seed)
    start = val_score(model, val)
    # the starting point competes too: adaptation never returns something worse on validation
    best = (start["mean_rank"], copy.deepcopy(model.state_dict()), -1)
    history, stale = [], 0
    bs = min(cfg.batch_size, len(X))
    bar = tqdm(range(cfg.max_epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        # frozen trunk: BatchNorm keeps the pretrained statistics (eval mode); light: everything trains
        model.train(mode == "light")
        perm = torch.randperm(len(X), generator=gen)
        losses = []
        for b in range(0, len(X) - bs + 1, bs):
            idx = perm[b : b + bs]
            clip_out, _ = model.forward_heads(augment(X[idx], cfg.time_shift, cfg.noise_std, gen), None)
            loss = clip(clip_out, Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            losses.append(float(loss.detach()))
        score = val_score(model, val)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **score})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_top5=f"{score['top5']:.2f}")
        if score["mean_rank"] < best[0] - 1e-6:
            best, stale = (score["mean_rank"], copy.deepcopy(model.state_dict()), epoch), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    bar.close()
    model.load_state_dict(best[1])
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    log = {"mode": mode, "trunk_lr_factor": trunk_lr_factor, "best_epoch": best[2], "val_start": start}
    if head_log is not None:
        log["head_init"] = head_log
    return model, {**log, "history": history}


@torch.no_grad()
def init_head_ridge(model: nn.Module, train: EncodingData, seed: int = 0) -> dict[str, Any]:
    """Set the CLIP read-out's last linear layer to a ridge fit of the targets on the trunk's features.

    Every virtual (and real) subject has its own tuning to image features, so the pretrained read-out is
    a poor start for a new person; a closed-form fit on the calibration trials uses all of them at once
    (penalty by grouped cross-validation on retrieval rank, training trials only).
    """
    from brainstream.models.encoders import fit_ridge as ridge_fit

    head = getattr(model, "clip_head", None)
    if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
        raise ValueError(
            "head_init=ridge needs a model whose clip_head ends in a Linear layer, got "
            f"{type(model).__name__}; use head_init: pretrained for this architecture"
        )
    model.eval()
    feats = []
    for s in range(0, len(train.X), 512):
        x = torch.from_numpy(np.ascontiguousarray(train.X[s : s + 512]))
        feats.append(head[:-1](model.trunk(x, None)).float().numpy())
    fit = ridge_fit(np.concatenate(feats), train.targets, groups=train.image_ids, scoring="rank", seed=seed)
    head[-1].weight.copy_(torch.as_tensor(fit.weight.T, dtype=head[-1].weight.dtype))
    head[-1].bias.copy_(torch.as_tensor(fit.bias, dtype=head[-1].bias.dtype))
    return {"alpha": fit.alpha}


def anchor_align(base: nn.Module, anchors: EncodingData, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """Anchor-based alignment: ``base`` (trunk frozen) with its read-out's last layer fitted on the anchors.

    The subject's anchor trials go through the shared trunk (its subject layer is the population mean: the
    subject-agnostic path) and a ridge map takes their features to the anchor images' embeddings, the
    shared space, in closed form (the Procrustes/ridge variant of aligning spaces through shared anchors).
    """
    model = copy.deepcopy(base)
    log = init_head_ridge(model, anchors, seed)
    return model.eval(), {"mode": "anchor", "head_init": log}


def image_folds(data: EncodingData, k: int, seed: int = 0) -> list[tuple[EncodingData, EncodingData]]:
    """K (train, held-out) splits of the TRAINING trials by image: every image is held out exactly once."""
    train = data.split("train")
    images = np.unique(train.image_ids)
    if k < 2 or len(images) < 2 * k:
        raise DataError(
            f"cannot cut {len(images)} training images into {k} folds of at least 2 images; "
            "lower adaptation.soup_folds"
        )
    order = np.random.default_rng([seed, 41]).permutation(images)
    out = []
    for f in range(k):
        held = set(order[f::k].tolist())
        is_held = np.array([i in held for i in train.image_ids])
        out.append((train.subset(~is_held), train.subset(is_held)))
    return out


@torch.no_grad()
def average_weights(models: list[nn.Module], bn_data: np.ndarray | None = None) -> nn.Module:
    """A model soup: the mean of ``models``' weights (same architecture, fine-tuned from one start).

    With ``bn_data``, BatchNorm statistics are measured again on those windows (the averaged weights
    change the activations they normalise); otherwise they are averaged too.
    """
    out = copy.deepcopy(models[0])
    state = out.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = torch.stack([m.state_dict()[key] for m in models]).mean(dim=0)
    out.load_state_dict(state)
    norms = [m for m in out.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn_data is not None and norms:
        out.eval()  # dropout off: only the BatchNorm layers measure
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over every batch
            m.train()
        for s in range(0, len(bn_data), 256):
            out(torch.from_numpy(np.ascontiguousarray(bn_data[s : s + 256])), None)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    return out.eval()


def fold_soup(
    base: nn.Module,
    data: EncodingData,
    recipe: dict[str, Any],
    cfg: AdaptationConfig,
    progress: bool = False,
    desc: str = "soup",
) -> tuple[nn.Module, dict[str, Any]]:
    """The recipe trained on ``cfg.soup_folds`` folds of ``data``'s training images, weights averaged.

    Each fold model is early-stopped on its own held-out images; their mean validation score is an
    out-of-fold estimate of the recipe (the soup itself has no untouched validation images).
    """
    models, scores = [], []
    for f, (tr, va) in enumerate(image_folds(data, cfg.soup_folds, cfg.seed)):
        model, _ = fine_tune(
            base, tr, va, recipe["mode"], cfg, progress, f"{desc} {f + 1}/{cfg.soup_folds}",
            recipe.get("trunk_lr_factor"), seed=cfg.seed + f,
        )  # fmt: skip
        models.append(model)
        scores.append(val_score(model, va))
    # light mode trained the BatchNorm statistics too: measure them again for the averaged weights
    bn = data.split("train").X if recipe["mode"] == "light" else None
    soup = average_weights(models, bn)
    cv = {k: float(np.mean([s[k] for s in scores])) for k in ("mean_rank", "top1", "top5")}
    return soup, {"folds": cfg.soup_folds, "cv": cv, "fold_val": scores}


def fit_ridge(train: EncodingData, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    from brainstream.models.training.trainer import fit_ridge_encoder

    return fit_ridge_encoder(train, None, seed)


# ---------------------------------------------------------------------------------------------- adapting
def _adapt_variants(
    base: nn.Module, train: EncodingData, val: EncodingData, cfg: AdaptationConfig, progress: bool, tag: str
) -> list[ModelResult]:
    out = []
    for mode in cfg.modes:
        if mode == "anchor":
            model, log = anchor_align(base, train, cfg.seed)
            out.append(ModelResult("adapted:anchor", model, val_score(model, val), log=log))
            continue
        for factor in cfg.trunk_lr_factors if mode == "light" else [None]:
            name = f"adapted:{mode}" + ("" if factor is None else f"@{factor:g}")
            model, log = fine_tune(base, train, val, mode, cfg, progress, f"{tag}: {name}", factor)
            out.append(ModelResult(name, model, val_score(model, val), log=log))
    return out


@one_thread
def adapt(
    pretrained_dir: Any,
    data: EncodingData,
    config: ProtocolConfig,
    progress: bool = True,
) -> AdaptationResult:
    """Zero-shot, ridge and adapted models for one subject's calibration trials; selection on validation.

    ``data`` holds the calibration's train and test trials of ONE subject (scaled with its own statistics).
    """
    from brainstream.models.checkpoint import load_checkpoint

    cfg = config.adaptation
    data.check(need_test=True)
    pre_model, pre_meta = load_checkpoint(pretrained_dir)
    _check_compatible(pre_meta, data)
    _check_zero_shot(pretrained_dir, data)
    seconds: dict[str, float] = {}
    train, val = carve_validation(data, cfg.val_fraction, cfg.seed)
    test = data.split("test")
    n_way = min(config.n_way, len(np.unique(test.image_ids)))
    t = time.perf_counter()
    base = subject_model(pre_model, pre_meta)
    zero = ModelResult("zero_shot", base, val_score(base, val))
    ridge_model, ridge_log = fit_ridge(train, cfg.seed)
    ridge = ModelResult("ridge", ridge_model, val_score(ridge_model, val), log=ridge_log)
    seconds["zero_shot_ridge"] = time.perf_counter() - t
    t = time.perf_counter()
    variants = _adapt_variants(base, train, val, cfg, progress, "adapting")
    seconds["adaptation"] = time.perf_counter() - t
    adapted = min(variants, key=lambda r: r.val["mean_rank"])
    if adapted.log["mode"] == "anchor":
        # closed form: refitted on every training image (train + validation), as a soup would be
        model, log = anchor_align(base, data.split("train"), cfg.seed)
        adapted = ModelResult(f"{adapted.name}+all", model, adapted.val, log=log)
    elif cfg.soup_folds > 1:
        t = time.perf_counter()
        soup, soup_log = fold_soup(base, data, adapted.log, cfg, progress, f"{adapted.name} soup")
        seconds["soup"] = time.perf_counter() - t
        # the soup inherits its recipe's validation score: every training image is in it, so none is left
        # to score it on; its out-of-fold estimate is in the log
        adapted = ModelResult(
            f"{adapted.name}+soup{cfg.soup_folds}", soup, adapted.val,
            log={**{k: v for k, v in adapted.log.items() if k != "history"}, "soup": soup_log},
        )  # fmt: skip
    chosen = min([adapted, ridge], key=lambda r: r.val["mean_rank"])
    # the test set is used here, once, after every choice above was made on validation
    for r in {id(r): r for r in [zero, ridge, *variants, adapted]}.values():
        r.test = score_test(r.model, test, n_way)
    t = time.perf_counter()
    curve = learning_curve(base, data, test, adapted.log, config, n_way, progress)
    last = {"n_trials": len(train.X) + len(val.X), "adapted": adapted.test["top5"],
            "ridge": ridge.test["top5"], "adapted_top1": adapted.test["top1"],
            "ridge_top1": ridge.test["top1"]}  # fmt: skip
    if "anchor" in cfg.modes:
        last["anchor"] = score_test(anchor_align(base, data.split("train"), cfg.seed)[0], test, n_way)["top5"]
    curve.append(last)
    seconds["learning_curve"] = time.perf_counter() - t
    chance1 = 1.0 / n_way
    return AdaptationResult(
        chosen=chosen, zero_shot=zero, ridge=ridge, adapted=adapted, candidates=[*variants, ridge],
        learning_curve=curve, n_train=len(train.X), n_val=len(val.X), n_test_trials=len(test.X),
        n_way=n_way, chance_top1=chance1, chance_top5=min(5, n_way) / n_way, seconds=seconds,
    )  # fmt: skip


def learning_curve(
    base: nn.Module,
    data: EncodingData,
    test: EncodingData,
    recipe: dict[str, Any],
    config: ProtocolConfig,
    n_way: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Test top-5 of the adapted recipe (the one chosen on validation) and ridge on the FIRST n trials.

    With ``soup_folds`` > 1 each point is a fold soup too, as the final model is.
    """
    cfg = config.adaptation
    train_all = data.split("train")
    rows = []
    for n in sorted({int(n) for n in cfg.learning_curve}):
        if n >= len(train_all.X):
            continue
        part = train_all.subset(np.arange(n))
        try:
            tr, va = carve_validation(part, cfg.val_fraction, cfg.seed)
            if cfg.soup_folds > 1:
                image_folds(part, cfg.soup_folds, cfg.seed)
        except DataError as exc:
            logger.warning("learning curve: %s trials are too few (%s)", n, exc)
            continue
        desc = f"learning curve n={n}"
        if recipe["mode"] == "anchor":
            model, _ = anchor_align(base, part, cfg.seed)
        elif cfg.soup_folds > 1:
            model, _ = fold_soup(base, part, recipe, cfg, progress, desc)
        else:
            model, _ = fine_tune(
                base, tr, va, recipe["mode"], cfg, progress, desc, recipe.get("trunk_lr_factor")
            )
        ridge, _ = fit_ridge(tr, cfg.seed)
        a, r = score_test(model, test, n_way), score_test(ridge, test, n_way)
        row = {"n_trials": n, "adapted": a["top5"], "ridge": r["top5"], "adapted_top1": a["top1"],
               "ridge_top1": r["top1"]}  # fmt: skip
        if "anchor" in cfg.modes:  # closed form, so its few-shot curve costs almost nothing
            row["anchor"] = score_test(anchor_align(base, part, cfg.seed)[0], test, n_way)["top5"]
        rows.append(row)
    return rows


def _check_compatible(meta: Any, data: EncodingData) -> None:
    if meta.ch_names != list(data.ch_names):
        meta.check_channels(list(data.ch_names))
    if meta.space != data.space:
        raise DataError(
            f"the pretrained encoder predicts {meta.space!r} but the calibration gallery is {data.space!r}; "
            "use the gallery the encoder was trained for"
        )
    if meta.n_times != data.n_times or abs(meta.sfreq - data.sfreq) > 1e-6:
        raise DataError(
            f"the pretrained encoder expects {meta.n_times} samples at {meta.sfreq:g} Hz, the calibration "
            f"windows have {data.n_times} at {data.sfreq:g} Hz; use the protocol it was pretrained with"
        )


def _check_zero_shot(pretrained_dir: Any, data: EncodingData) -> None:
    """Refuse a test image that the pretrained trunk saw in training (the test would not be zero-shot)."""
    import json
    from pathlib import Path

    from brainstream.models.training.trainer import TRAIN_IMAGES_FILE

    path = Path(pretrained_dir) / TRAIN_IMAGES_FILE
    if not path.is_file():
        return
    seen = set(json.loads(path.read_text()))
    leaked = sorted(seen & set(data.image_ids[data.splits == "test"].tolist()))
    if leaked:
        raise DataError(
            f"{len(leaked)} calibration test images were training images of the pretrained encoder (e.g. "
            f"{leaked[:3]}); not a zero-shot test: pretrain with this protocol's test images held out"
        )


# ---------------------------------------------------------------------------------------------- reference
@one_thread
def fit_reference(
    pretrained_dir: Any,
    config: ProtocolConfig,
    gallery: Any,
    seed: int,
    scaler: Any,
    test: EncodingData,
    progress: bool = True,
) -> tuple[ModelResult, dict[str, Any]]:
    """A model trained on the virtual subject ``seed`` with ``reference_factor`` × the training trials.

    The extra sessions are simulated offline (same subject, timing and chain, scaled with the calibration's
    statistics); the candidates (the adaptation variants with more data — same augmentation and read-out
    initialisation —, and the same architecture trained from scratch) are selected on validation; the test
    set is the calibration's own. No fold soup: with 5× the data it did not help the reference on
    development subjects (seeds 51, 54, 55: 50-way top-5 0.89 souped vs 0.93 single) and costs K× the time.
    """
    from brainstream.calibration.data import epochs_from_filtered, simulate_filtered, timeline, to_encoding
    from brainstream.calibration.protocol import split_images
    from brainstream.models.checkpoint import load_checkpoint
    from brainstream.models.device_profile import load_device_profile

    t0 = time.perf_counter()
    cfg = config.adaptation
    test_images, _, _ = split_images(config, list(gallery.ids))
    pool = [i for i in gallery.ids if i not in set(test_images)]
    rng = np.random.default_rng([seed, 37])
    n = config.reference_factor * config.n_train_images
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(math.ceil(n / len(pool)))])[:n]
    items = [("train", pool[k]) for k in order]
    trials = timeline(items, config.image_s, config.isi_s, config.isi_jitter_s, seed + 10**6)
    rec, _ = simulate_filtered(
        config.subject.profile, gallery, seed, trials, config.preprocessing, config.image_s,
        **config.subject.simulator_kwargs(), progress=progress, desc=f"reference data ({n} trials)",
    )  # fmt: skip
    profile = load_device_profile(config.subject.profile)
    ds = epochs_from_filtered(
        [rec], config.preprocessing, config.window.tmin, config.window.tmax, gallery=gallery, scaler=scaler,
        positions=profile.positions_2d, modality=profile.modality,
    )  # fmt: skip
    data = to_encoding(ds, f"reference-{seed}")
    train, val = carve_validation(data, cfg.val_fraction, cfg.seed)
    pre_model, pre_meta = load_checkpoint(pretrained_dir)
    base = subject_model(pre_model, pre_meta)
    variants = _adapt_variants(
        base, train, val, cfg.model_copy(update={"modes": ["light"]}), progress, "reference"
    )
    if config.reference_from_scratch:
        ref_cfg = cfg.model_copy(update={"trunk_lr_factors": [1.0]})
        scratch = _scratch_model(pre_meta)
        model, log = fine_tune(
            scratch, train, val, "light", ref_cfg, progress, desc="reference: from scratch"
        )
        variants.append(ModelResult("from_scratch", model, val_score(model, val), log=log))
    best = min(variants, key=lambda r: r.val["mean_rank"])
    n_way = min(config.n_way, len(np.unique(test.image_ids)))
    best.test = score_test(best.model, test, n_way)
    info = {
        "n_trials": int(len(data.X)),
        "candidates": {v.name: v.val for v in variants},
        "chosen": best.name,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return best, info


def _scratch_model(meta: Any) -> nn.Module:
    from brainstream.models.encoders import build_encoder

    arch = one_subject_arch(meta.arch)
    if meta.positions is not None:
        arch["positions"] = meta.positions
    torch.manual_seed(0)
    return build_encoder(arch)
