"""Train an encoder: AdamW, cosine / one-cycle schedule, early stopping and λ / model selection on a
validation split carved from the training images, then one evaluation on the test split.

``train(config, out_dir, data=None)`` is the Python entry point (``brainstream train`` calls it). The
selected model is written as a checkpoint folder (docs/architecture.md §7) with ``metrics.json`` (test
metrics, computed
once, after selection), ``training.json`` (selection table, learning curves, whole-set and per-subject
numbers) and ``ridge/`` (the ridge baseline fitted on the same training data, itself a checkpoint).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainstream.models.checkpoint import CheckpointMeta, save_checkpoint
from brainstream.models.encoders import build_encoder, fit_ridge
from brainstream.models.encoders.ridge import DEFAULT_ALPHAS, RidgeConfig, RidgeEncoder
from brainstream.models.losses import ClipLoss, CombinedLoss, MSELoss
from brainstream.models.metrics import retrieval_ranks
from brainstream.models.training.config import TrainingConfig
from brainstream.models.training.data import DataError, EncodingData, candidates_for, carve_validation
from brainstream.models.training.scoring import encode, evaluate_split

TRAIN_IMAGES_FILE = "train_images.json"  # training image ids; evaluation refuses them as test images

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process sits in a DistributedDataParallel group (None everywhere when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    model: nn.Module
    meta: CheckpointMeta
    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    ridge: nn.Module | None = None
    out_dir: Path | None = None


# ------------------------------------------------------------------------------------------------ helpers
def seed_everything(seed: int, num_threads: int | None = None) -> None:
    """Seed python, numpy and torch; make CPU kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if num_threads:
        torch.set_num_threads(num_threads)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("config asks for device 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def positions_for(ch_names: list[str]) -> np.ndarray | None:
    """2-D positions of ``ch_names`` from the first device profile that has them all."""
    from brainstream.models.config_base import iter_configs
    from brainstream.models.device_profile import load_device_profile

    for _, path in iter_configs("devices"):
        try:
            profile = load_device_profile(path)
            if not set(ch_names) <= set(profile.channels):
                continue
            index = {c: i for i, c in enumerate(profile.channels)}
            return profile.positions_2d[[index[c] for c in ch_names]]
        except Exception as exc:  # a broken profile must not stop training with another one
            logger.debug("profile %s unusable for positions: %s", path, exc)
    return None


def build_arch(
    config: TrainingConfig, data: EncodingData, override: dict[str, Any], lam: float
) -> dict[str, Any]:
    """The full architecture dict: the config's model + a selection override + the data-given sizes."""
    arch = {**config.model, **override}
    arch.update(
        n_channels=len(data.ch_names), n_times=data.n_times, dim=data.dim, n_subjects=len(data.subject_names)
    )
    if arch["name"] == "brain_module":
        pos = data.positions if data.positions is not None else positions_for(data.ch_names)
        if pos is None:
            raise DataError(
                "the brain module needs 2-D sensor positions: the data carries none and no device profile "
                "under configs/devices lists all its channels; add a profile or pass positions"
            )
        data.positions = np.asarray(pos, dtype=np.float64)
        arch["positions"] = np.round(data.positions, 6).tolist()
        arch["output_head"] = "clip" if lam > 0 else "mse"
    return arch


def _lr_lambda(schedule: str, total: int, warmup: int):
    def f(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


class _Heads(nn.Module):
    """Routes DDP's forward to ``forward_heads`` so gradients of both heads are synchronised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, subject: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_heads(x, subject)


def augment(
    x: torch.Tensor, max_shift: int, noise_std: float, gen: torch.Generator, sign_flip: float = 0.0
) -> torch.Tensor:
    """Shift each trial in time by a random whole number of samples (edges repeat), add noise, and flip the
    polarity of each trial with probability ``sign_flip``."""
    if max_shift > 0:
        b, _, t = x.shape
        shift = torch.randint(-max_shift, max_shift + 1, (b,), generator=gen).to(x.device)
        idx = (torch.arange(t, device=x.device)[None, :] - shift[:, None]).clamp(0, t - 1)
        x = torch.gather(x, 2, idx[:, None, :].expand_as(x))
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=gen).to(x.device)
    if sign_flip > 0:
        flip = (torch.rand(x.shape[0], generator=gen) < sign_flip).to(x.device)
        x = torch.where(flip[:, None, None], -x, x)
    return x


def _average_loss_grads(crit: nn.Module, world_size: int) -> None:
    """The loss's learnable temperature lives outside DDP: average its gradient across ranks by hand."""
    import torch.distributed as torch_dist

    for p in crit.parameters():
        if p.grad is not None:
            torch_dist.all_reduce(p.grad)
            p.grad /= world_size


def _sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's BatchNorm statistics to every rank (each rank updated them on its own batches)."""
    import torch.distributed as torch_dist

    for buf in model.buffers():
        torch_dist.broadcast(buf.data, src=0)


def validation_score(
    model: nn.Module,
    crit: CombinedLoss,
    val: EncodingData,
    metric: str,
    n_way: int,
    device: torch.device,
    seed: int,
) -> tuple[float, dict[str, float]]:
    """Lower is better. Also returns top-1/top-5/mean rank on the validation images for the log."""
    pred = encode(model, val.X, val.subjects, device=device)
    cand, true, _ = candidates_for(val)
    ranks = retrieval_ranks(pred, cand, true, n_way=n_way, seed=seed)
    n = min(n_way, len(cand))
    info = {
        "top1": float(np.mean(ranks <= 1)),
        "top5": float(np.mean(ranks <= 5)),
        "mean_rank": float(np.mean((ranks - 1) / max(1, n - 1))),
        "n_way": n,
    }
    if metric == "loss":
        with torch.no_grad():
            x = torch.from_numpy(val.X).to(device)
            s = torch.from_numpy(val.subjects).to(device)
            c, m = model.forward_heads(x, s)
            loss, _ = crit(c, m, torch.from_numpy(val.targets).to(device))
        info["loss"] = float(loss)
        return info["loss"], info
    return (-info["top5"] if metric == "top5" else info["mean_rank"]), info


# --------------------------------------------------------------------------------------------- one candidate
def fit_candidate(
    arch: dict[str, Any],
    lam: float,
    config: TrainingConfig,
    train_set: EncodingData,
    val_set: EncodingData,
    device: torch.device,
    progress: bool = True,
    dist: DistContext | None = None,
    desc: str = "training",
) -> tuple[nn.Module, float, dict[str, Any]]:
    """Train one (architecture, λ) with early stopping on validation; return the best model, score, log."""
    dist = dist or DistContext()
    seed_everything(config.seed, config.num_threads)
    model = build_encoder(arch).to(device)
    loss_cfg = config.loss
    clip = ClipLoss(loss_cfg.temperature, loss_cfg.learn_temperature, loss_cfg.symmetric, loss_cfg.soft_clip)
    crit = CombinedLoss(lam, clip, MSELoss(loss_cfg.normalise_mse_target)).to(device)
    opt_cfg = config.optim
    params = list(model.parameters()) + [p for p in crit.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    n = len(train_set.X)
    local_bs = max(2, opt_cfg.batch_size // dist.world_size)
    steps_per_epoch = max(1, n // (local_bs * dist.world_size))
    total = steps_per_epoch * opt_cfg.max_epochs
    if opt_cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opt_cfg.lr, total_steps=total)
    else:
        warm = int(opt_cfg.warmup_fraction * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(opt_cfg.schedule, total, warm))
    heads: nn.Module = _Heads(model)
    if dist.world_size > 1:
        # with λ ∈ {0, 1} one head gets no gradient: DDP must be told, or it waits for it forever
        heads = nn.parallel.DistributedDataParallel(heads, find_unused_parameters=lam in (0.0, 1.0))
    X = torch.from_numpy(train_set.X)
    Y = torch.from_numpy(train_set.targets)
    S = torch.from_numpy(train_set.subjects)
    gen = torch.Generator().manual_seed(config.seed)
    n_way = config.evaluation.n_way
    best_score, best_state, best_epoch, stale = math.inf, None, -1, 0
    history: list[dict[str, Any]] = []
    from tqdm import tqdm

    bar = tqdm(range(opt_cfg.max_epochs), desc=desc, unit="epoch", disable=not (progress and dist.is_main))
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)  # same on every rank (same seed): ranks take disjoint slices
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * local_bs * dist.world_size : (b + 1) * local_bs * dist.world_size]
            idx = idx[dist.rank :: dist.world_size]
            x, y, s = X[idx].to(device), Y[idx].to(device), S[idx].to(device)
            aug = config.augment
            x = augment(x, aug.time_shift, aug.noise_std, gen, aug.sign_flip)
            clip_out, mse_out = heads(x, s)
            loss, _ = crit(clip_out, mse_out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dist.world_size > 1:
                _average_loss_grads(crit, dist.world_size)
            if opt_cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, opt_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        if dist.world_size > 1:
            _sync_buffers(model)
        # every rank scores the full validation set with identical weights: identical stopping decisions
        score, info = validation_score(
            model, crit, val_set, config.selection.metric, n_way, device, config.seed
        )
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_score": score, **info})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_top5=f"{info['top5']:.3f}")
        if score < best_score - 1e-6:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= opt_cfg.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log = {
        "lambda": lam,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_score": best_score,
        "temperature": clip.temperature,
        "history": history,
    }
    return model, best_score, log


# ---------------------------------------------------------------------------------------------------- ridge
def fit_ridge_encoder(
    data: EncodingData, alphas: list[float] | None = None, seed: int = 0, per_subject: bool = True
) -> tuple[RidgeEncoder, dict[str, Any]]:
    """Ridge baseline on ``data`` (all its rows), penalty by cross-validation grouped by image.

    With several subjects and ``per_subject`` each subject gets its own map (the within-subject linear
    decoder; sensors and sources differ between people), else one map is fitted on everything (what an
    unseen subject gets). The penalty is chosen by held-out retrieval rank, not MSE: MSE favours heavy
    shrinkage towards the mean embedding, which costs retrieval (measured on a virtual subject: 200-way
    top-5 6.5 % with the MSE-chosen vs 11.5 % with the rank-chosen penalty).
    """
    alphas = alphas or list(DEFAULT_ALPHAS)
    n_subj = len(data.subject_names)
    groups = (
        [np.flatnonzero(data.subjects == s) for s in range(n_subj)] if per_subject and n_subj > 1 else None
    )
    if groups is not None and any(len(g) < 2 for g in groups):
        groups = None  # a subject without training trials: fall back to one shared map
    if groups is None:
        fits = [
            fit_ridge(data.X, data.targets, alphas=alphas, groups=data.image_ids, scoring="rank", seed=seed)
        ]
    else:
        fits = [
            fit_ridge(
                data.X[g], data.targets[g], alphas=alphas, groups=data.image_ids[g], scoring="rank", seed=seed
            )
            for g in groups
        ]
    config = RidgeConfig(
        n_channels=len(data.ch_names), n_times=data.n_times, dim=data.dim, n_subjects=len(fits)
    )
    enc = RidgeEncoder(config)
    enc.load_fit(fits).eval()
    return enc, {
        "alpha": [f.alpha for f in fits],
        "alphas": fits[0].alphas,
        "cv_scores": [f.cv_scores for f in fits],
    }


# ----------------------------------------------------------------------------------------------------- train
def train(
    config: TrainingConfig,
    out_dir: str | Path | None = None,
    data: EncodingData | None = None,
    progress: bool = True,
    evaluate_test: bool = True,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train per ``config``; select on validation; evaluate on test once; write the checkpoint folder.

    Parameters
    ----------
    config : TrainingConfig
        The recipe (``load_training_config("sim_meg")``).
    out_dir : path | None
        Checkpoint folder to write (None: nothing written).
    data : EncodingData | None
        The trials; None loads them as ``config.data`` says (``models.training.loading.load_data``).
    progress : bool
        Show tqdm progress bars.
    evaluate_test : bool
        Compute test metrics after selection (False: the test split is never touched, e.g. for a final
        fit on all data).
    dist : DistContext | None
        Set by the DDP entry point; only rank 0 writes files.
    """
    dist = dist or DistContext()
    t0 = time.perf_counter()
    seed_everything(config.seed, config.num_threads)
    device = pick_device(config.device)
    if data is None:
        from brainstream.models.training.loading import load_data

        data = load_data(config, progress=progress)
    data.check(need_test=evaluate_test)
    train_set, val_set = carve_validation(data, config.selection.val_fraction, config.seed)
    candidates = [(lam, ov) for ov in config.selection.model_overrides for lam in config.selection.lambdas]
    best = None
    table = []
    for k, (lam, override) in enumerate(candidates):
        arch = build_arch(config, data, override, lam)
        desc = f"candidate {k + 1}/{len(candidates)} λ={lam:g}"
        model, score, log = fit_candidate(arch, lam, config, train_set, val_set, device, progress, dist, desc)
        table.append(
            {"lambda": lam, "override": override, **{k2: v for k2, v in log.items() if k2 != "history"}}
        )
        if best is None or score < best[0]:
            best = (score, model, arch, lam, log)
    assert best is not None
    _, model, arch, lam, log = best
    model = model.cpu().eval()
    details: dict[str, Any] = {
        "selection": {"metric": config.selection.metric, "candidates": table, "chosen_lambda": lam},
        "history": log["history"],
        "n_train": len(train_set.X),
        "n_val": len(val_set.X),
        "n_val_images": len(np.unique(val_set.image_ids)),
    }
    ridge = None
    metrics: dict[str, Any] = {}
    if evaluate_test and dist.is_main:
        train_all = data.split("train")
        if config.evaluation.ridge:
            ridge, details["ridge"] = fit_ridge_encoder(
                train_all, config.evaluation.ridge_alphas, config.seed
            )
        test = data.split("test")
        report = evaluate_split(
            model, test, ridge, n_way=config.evaluation.n_way, seed=config.evaluation.seed
        )
        metrics = report["metrics"]
        details.update({k: v for k, v in report.items() if k != "metrics"})
    details["seconds"] = time.perf_counter() - t0
    meta = CheckpointMeta(
        arch=arch,
        modality=data.modality,
        ch_names=data.ch_names,
        positions=None if data.positions is None else np.round(data.positions, 6).tolist(),
        sfreq=data.sfreq,
        tmin=data.tmin,
        tmax=data.tmin + data.n_times / data.sfreq,
        preprocessing=data.preprocessing,
        scaler=data.scaler,
        space=data.space,
        dim=data.dim,
        subjects=data.subject_names,
        training={
            "config": config.model_dump(mode="json"),
            "data": {
                **data.summary,
                "n_trials": len(data.X),
                "n_train_trials": len(train_set.X),
                "n_val_trials": len(val_set.X),
                "n_test_trials": int((data.splits == "test").sum()),
            },
            "chosen_lambda": lam,
            "best_epoch": log["best_epoch"],
        },
        metrics=metrics,
    )
    out = None
    if out_dir is not None and dist.is_main:
        out = Path(out_dir)
        save_checkpoint(out, model, meta)
        if ridge is not None:
            ridge_meta = meta.model_copy(update={"arch": ridge.config.model_dump(), "metrics": {}})
            save_checkpoint(out / "ridge", ridge, ridge_meta)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out / "training.json").write_text(json.dumps(details, indent=2, default=float) + "\n")
        train_images = sorted(set(data.image_ids[data.splits == "train"].tolist()))
        (out / TRAIN_IMAGES_FILE).write_text(json.dumps(train_images) + "\n")
    return TrainResult(model=model, meta=meta, metrics=metrics, details=details, ridge=ridge, out_dir=out)
