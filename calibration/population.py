"""Across people: zero-shot and few-shot decoding of virtual subjects the pretrained encoder never saw.

The pretrained multi-subject encoder (:mod:`calibration.pretrained`: a shared trunk, one subject layer per
pretraining subject) meets held-out subjects of the same population (``subject.shared_fraction``). For
each held-out subject an offline session is simulated (the protocol's test images × repeats, and training
images it never showed the pretraining subjects' test split), scaled with the subject's own robust
statistics (label-free), and scored on its repeated test images (``n_way`` retrieval, predictions averaged
over repetitions, chance beside it):

- **zero-shot**: no data from the subject beyond the scaler's label-free statistics — the pretrained
  encoder on its subject-agnostic path (the shared subject layer trained by subject dropout, else the mean
  of the subject layers);
- **unsupervised** alignment (not zero-shot): the zero-shot model with its BatchNorm statistics measured
  again on the subject's unlabelled training windows (AdaBN);
- **few-shot** on the subject's first *n* training trials, for each *n* of ``shots``:

  - ``subject_layer``: a new subject layer, trunk and read-out frozen (today's calibration);
  - ``adapter``: a MindBridge-style adapter — a fresh subject layer and read-out at the full learning rate,
    the shared trunk tuned at a tenth of it (MindBridge also mixes source subjects into each batch; not
    done here);
  - ``anchor``: anchor-based alignment, no gradient training — the subject's *n* trials are anchors whose
    images' embeddings are known, and a ridge map (penalty by grouped CV) from the shared trunk's features
    (zero-shot path) to the shared embedding space replaces the read-out's last layer;
  - ``ridge``: the subject's own ridge on the raw windows (the linear within-subject baseline);

- **within**: the same architecture trained from scratch on ``within_trials`` of the subject's trials
  (the within-subject model the few-shot numbers are compared with).

Every few-shot model is early-stopped on validation images carved from its own *n* trials; the test images
are scored once. ``python -m brainstream.calibration.population --help`` runs it; docs/calibration.md has
the results.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainstream.calibration.adaptation import (
    _scratch_model,
    anchor_align,
    average_weights,
    fine_tune,
    fit_ridge,
    image_ranks,
    one_thread,
    score_test,
    subject_model,
)
from brainstream.calibration.protocol import ProtocolConfig, split_images
from brainstream.models.training.data import DataError, EncodingData, carve_validation

logger = logging.getLogger(__name__)

METHODS = ("subject_layer", "adapter", "anchor")
DEFAULT_SHOTS = (25, 50, 100, 200, 400)
ADAPTER_TRUNK_LR = 0.1  # the adapter's trunk learning rate, relative to the subject layer's and read-out's
# a zero-shot-only session's training images (its scaler's): as many as the full evaluation's sessions have
ZERO_SHOT_TRAIN_IMAGES = 600


def few_shot_model(
    base: nn.Module, part: EncodingData, method: str, config: ProtocolConfig, progress: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """One held-out subject's model from ``part`` (its first n training trials) by ``method``."""
    cfg = config.adaptation
    if method == "anchor":
        return anchor_align(base, part, cfg.seed)
    if method == "ridge":
        return fit_ridge(part, cfg.seed)
    tr, va = carve_validation(part, cfg.val_fraction, cfg.seed)
    if method == "subject_layer":
        return fine_tune(base, tr, va, "subject_layer", cfg, progress, f"subject layer n={len(part.X)}")
    if method == "adapter":
        desc = f"adapter n={len(part.X)}"
        return fine_tune(base, tr, va, "light", cfg, progress, desc, trunk_lr_factor=ADAPTER_TRUNK_LR)
    raise ValueError(f"unknown few-shot method {method!r}; expected one of {(*METHODS, 'ridge')}")


def heldout_session(
    config: ProtocolConfig,
    gallery: Any,
    seed: int,
    n_train: int,
    progress: bool = False,
    session_cache: Path | None = None,
) -> EncodingData:
    """A held-out subject's offline session: ``n_train`` training images once + the protocol's test set.

    Training images never include the protocol's test images; the robust scaler is fitted on the training
    windows (no labels), as a calibration does. ``session_cache``: a folder that keeps the session for the
    next run (:func:`calibration.data.cached_trials`); None: simulated every time.
    """
    from brainstream.calibration.data import cached_trials
    from brainstream.calibration.pretrained import simulation_key

    if session_cache is None:
        return _simulate_heldout(config, gallery, seed, n_train, progress)
    key = {**simulation_key(config, gallery), "session": "heldout", "seed": seed, "n_train": n_train,
           "test_repeats": config.test_repeats}  # fmt: skip
    return cached_trials(
        session_cache, key, lambda: _simulate_heldout(config, gallery, seed, n_train, progress)
    )


def _simulate_heldout(
    config: ProtocolConfig, gallery: Any, seed: int, n_train: int, progress: bool
) -> EncodingData:
    from brainstream.calibration.data import epochs_from_filtered, simulate_filtered, timeline, to_encoding
    from brainstream.models.device_profile import load_device_profile

    test, _, _ = split_images(config, list(gallery.ids))
    pool = [i for i in gallery.ids if i not in set(test)]
    if n_train > len(pool):
        raise DataError(
            f"{n_train} training images asked for, the gallery has {len(pool)} outside the test set; "
            "lower --shots or --within-trials"
        )
    rng = np.random.default_rng([seed, 43])
    train = [pool[k] for k in rng.choice(len(pool), n_train, replace=False)]
    items = [("train", i) for i in train] + [("test", i) for i in test for _ in range(config.test_repeats)]
    items = [items[k] for k in rng.permutation(len(items))]
    trials = timeline(items, config.image_s, config.isi_s, config.isi_jitter_s, seed + 2 * 10**6)
    rec, _ = simulate_filtered(
        config.subject.profile, gallery, seed, trials, config.preprocessing, config.image_s,
        **config.subject.simulator_kwargs(), progress=progress, desc=f"held-out subject {seed}",
    )  # fmt: skip
    profile = load_device_profile(config.subject.profile)
    ds = epochs_from_filtered(
        [rec], config.preprocessing, config.window.tmin, config.window.tmax, gallery=gallery,
        positions=profile.positions_2d, modality=profile.modality,
    )  # fmt: skip
    return to_encoding(ds, f"heldout-{seed}")


def _row(result: dict[str, Any]) -> dict[str, Any]:
    return {"top1": result["top1"], "top5": result["top5"], "single_top5": result["single_trial"]["top5"]}


def _hits(model: nn.Module, test: EncodingData, n_way: int) -> list[int]:
    """1 where a test image (``candidates_for`` order) is in the model's top 5: for confidence intervals."""
    return (image_ranks(model, test, n_way) <= 5).astype(int).tolist()


def bootstrap_ci(
    per_subject: list[Any], n_boot: int = 4000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Mean of per-image values over subjects and its bootstrap interval over subjects × images.

    Each resample draws subjects with replacement, then each drawn subject's images with replacement, so
    the interval carries both the between-subject spread and the coarseness of a small test set. Pass
    per-image differences of two models on the same sessions for a paired comparison.

    Parameters
    ----------
    per_subject : list of array-like, each of shape (n_images,)
        One value per test image (e.g. top-5 hit 0/1) for each subject; every subject has the same count.
    n_boot : int
        Resamples.
    level : float
        Coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
    seed : int
        Seed of the resampling.
    """
    values = [np.asarray(v, dtype=np.float64).reshape(-1) for v in per_subject]
    if not values or any(v.size == 0 for v in values) or len({v.size for v in values}) != 1:
        raise ValueError(
            "bootstrap_ci needs at least one subject and the same number of test images for each, got "
            f"{[v.size for v in values]}"
        )
    table = np.stack(values)  # (subjects, images)
    n_sub, n_img = table.shape
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, n_sub, (n_boot, n_sub))
    images = rng.integers(0, n_img, (n_boot, n_sub, n_img))
    means = table[subjects[:, :, None], images].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(table.mean()), "lo": float(lo), "hi": float(hi), "level": level,
            "n_subjects": n_sub, "n_images": n_img}  # fmt: skip


@one_thread
def evaluate_subject(
    pretrained_dir: Path,
    config: ProtocolConfig,
    gallery: Any,
    seed: int,
    shots: list[int],
    methods: list[str],
    within_trials: int | None,
    progress: bool = False,
    scaler_trials: int = 0,
    session_cache: Path | None = None,
) -> dict[str, Any]:
    """Zero-shot, few-shot curves (each method and ridge) and the within-subject model for one subject.

    The session has as many training images as the largest of ``shots``, ``within_trials`` and
    ``scaler_trials`` (its scaler and AdaBN use them all, without labels); ``session_cache``: see
    :func:`heldout_session`.
    """
    from brainstream.models.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    n_train = max([*shots, within_trials or 0, scaler_trials])
    data = heldout_session(config, gallery, seed, n_train, progress, session_cache)
    pre_model, pre_meta = load_checkpoint(pretrained_dir)
    out = evaluate_data(pre_model, pre_meta, data, config, shots, methods, within_trials, progress)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return {"seed": seed, **out}


def evaluate_data(
    pre_model: nn.Module,
    pre_meta: Any,
    data: EncodingData,
    config: ProtocolConfig,
    shots: list[int],
    methods: list[str],
    within_trials: int | None,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_subject` on one subject's trials (``data``: its training trials and test trials)."""
    train_all, test = data.split("train"), data.split("test")
    if max([*shots, within_trials or 0]) > len(train_all.X):
        raise DataError(
            f"{len(train_all.X)} training trials, fewer than the shots / within-subject model ask for"
        )
    n_way = min(config.n_way, len(np.unique(test.image_ids)))
    base = subject_model(pre_model, pre_meta)
    out: dict[str, Any] = {"n_way": n_way, "chance_top5": min(5, n_way) / n_way}
    out["zero_shot"] = {**_row(score_test(base, test, n_way)), "hits": _hits(base, test, n_way)}
    if getattr(pre_model.subject_layer, "shared", None) is not None:
        # the ablation: the same encoder through the mean of its subject layers (the path without dropout)
        mean = copy.deepcopy(base)
        with torch.no_grad():
            mean.subject_layer.weight.copy_(pre_model.subject_layer.weight.mean(dim=0, keepdim=True))
        out["zero_shot_mean_layers"] = _row(score_test(mean, test, n_way))
    # not zero-shot: the subject's own unlabelled training windows re-measure the BatchNorm statistics
    adabn = average_weights([base], bn_data=train_all.X)
    out["unsupervised"] = {**_row(score_test(adabn, test, n_way)), "hits": _hits(adabn, test, n_way)}
    curves: dict[str, list[dict[str, Any]]] = {m: [] for m in [*methods, "ridge"]} if shots else {}
    for n in sorted(shots):
        part = train_all.subset(np.arange(n))
        for method in curves:
            t = time.perf_counter()
            model, _ = few_shot_model(base, part, method, config, progress)
            row = {"n_trials": n, **_row(score_test(model, test, n_way)), "seconds": time.perf_counter() - t}
            curves[method].append(row)
            logger.info("%s n=%s %s: top-5 %.2f", data.subject_names[0], n, method, row["top5"])
    out["few_shot"] = curves
    if within_trials:
        part = train_all.subset(np.arange(within_trials))
        tr, va = carve_validation(part, config.adaptation.val_fraction, config.adaptation.seed)
        cfg = config.adaptation.model_copy(update={"trunk_lr_factors": [1.0]})
        scratch, _ = fine_tune(_scratch_model(pre_meta), tr, va, "light", cfg, progress, "within (scratch)")
        ridge, _ = fit_ridge(part, config.adaptation.seed)
        out["within"] = {
            "n_trials": within_trials,
            "scratch": _row(score_test(scratch, test, n_way)),
            "ridge": _row(score_test(ridge, test, n_way)),
        }
    return out


def run_population(
    config: ProtocolConfig,
    gallery: Any,
    held_out: list[int],
    shots: list[int],
    methods: list[str],
    within_trials: int | None,
    progress: bool = True,
    scaler_trials: int = 0,
    session_cache: Path | None = None,
    pretrained: Path | None = None,
) -> dict[str, Any]:
    """Pretrain on ``config.pretrained.seeds`` (cached) and evaluate every held-out subject.

    ``pretrained``: evaluate this encoder folder instead (e.g. a shipped one; its seeds must not be held
    out). ``scaler_trials``, ``session_cache``: see :func:`evaluate_subject`.
    """
    from brainstream.calibration.pretrained import check_seed, get_pretrained, read_info

    for seed in held_out:
        check_seed(config, seed)
    t = time.perf_counter()
    recipe = None  # a given encoder's recipe is in its own folder (model.yaml, training.json)
    if pretrained is None:
        pretrained = get_pretrained(config, gallery, progress=progress, session_cache=session_cache)
        seeds, recipe = list(config.pretrained.seeds), config.pretrained.model_dump()
    else:
        seeds = list(read_info(pretrained)["seeds"])
        if set(seeds) & set(held_out):
            raise ValueError(
                f"held-out seeds {sorted(set(seeds) & set(held_out))} pretrained the encoder {pretrained}; "
                "hold out other subjects"
            )
    pre_seconds = time.perf_counter() - t
    subjects = []
    for seed in held_out:
        subjects.append(
            evaluate_subject(
                pretrained, config, gallery, seed, shots, methods, within_trials, progress, scaler_trials,
                session_cache,
            )
        )  # fmt: skip
    info = read_info(pretrained)
    return {
        "protocol": config.name,
        "shared_fraction": config.subject.shared_fraction,
        "pretrained": {"path": str(pretrained), "seeds": seeds, "recipe": recipe,
                       "n_trials": info.get("n_trials"), "build_seconds": info.get("seconds"),
                       "seconds": round(pre_seconds, 1)},
        "held_out": held_out,
        "subjects": subjects,
        "summary": summarize(subjects),
    }  # fmt: skip


def summarize(subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean top-5 over held-out subjects: zero-shot, each method at each n, within-subject models."""
    out: dict[str, Any] = {
        "chance_top5": float(np.mean([s["chance_top5"] for s in subjects])),
        "zero_shot": float(np.mean([s["zero_shot"]["top5"] for s in subjects])),
    }
    if all("hits" in s["zero_shot"] for s in subjects):
        out["zero_shot_ci"] = bootstrap_ci([s["zero_shot"]["hits"] for s in subjects])
    if all("zero_shot_mean_layers" in s for s in subjects):
        out["zero_shot_mean_layers"] = float(np.mean([s["zero_shot_mean_layers"]["top5"] for s in subjects]))
    if all("unsupervised" in s for s in subjects):
        out["unsupervised"] = float(np.mean([s["unsupervised"]["top5"] for s in subjects]))
    methods = subjects[0]["few_shot"] or {}
    out["few_shot"] = {
        m: {
            str(row["n_trials"]): float(np.mean([s["few_shot"][m][k]["top5"] for s in subjects]))
            for k, row in enumerate(methods[m])
        }
        for m in methods
    }
    if all("within" in s for s in subjects):
        out["within"] = {
            k: float(np.mean([s["within"][k]["top5"] for s in subjects])) for k in ("scratch", "ridge")
        }
    return out


def compare(result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Zero-shot of ``result`` minus ``baseline`` on the held-out subjects both evaluated: the mean
    difference of top-5 hits with its paired bootstrap interval (same sessions, image by image)."""
    base = {s["seed"]: s["zero_shot"]["hits"] for s in baseline["subjects"]}
    common = [s for s in result["subjects"] if s["seed"] in base]
    if not common:
        raise ValueError(
            f"no held-out subject in common with the baseline ({sorted(base)} vs {result['held_out']}); "
            "compare runs on the same held-out seeds"
        )
    diffs = [np.subtract(s["zero_shot"]["hits"], base[s["seed"]]) for s in common]
    return {"seeds": [s["seed"] for s in common], "baseline": baseline["pretrained"]["path"],
            "zero_shot_difference": bootstrap_ci(diffs)}  # fmt: skip


def markdown_table(result: dict[str, Any]) -> str:
    """The few-shot table: one row per method, one column per n (mean test top-5 %), zero-shot and chance."""
    s = result["summary"]
    ci = s.get("zero_shot_ci")
    head = (
        f"Zero-shot top-5 {100 * s['zero_shot']:.1f} % (chance {100 * s['chance_top5']:.1f} %)"
        + (f", {100 * ci['level']:.0f} % CI {100 * ci['lo']:.1f}–{100 * ci['hi']:.1f}" if ci else "")
        + f" over {len(result['subjects'])} held-out subjects; AdaBN {100 * s['unsupervised']:.1f} %."
    )
    diff = result.get("compared", {}).get("zero_shot_difference")
    if diff:
        head += (
            f" Against the baseline: {100 * diff['mean']:+.1f} points "
            f"(paired CI {100 * diff['lo']:+.1f} to {100 * diff['hi']:+.1f})."
        )
    if not s["few_shot"]:
        return head
    shots = list(next(iter(s["few_shot"].values())))
    lines = [head, "", "| method | zero-shot | " + " | ".join(f"n = {n}" for n in shots) + " |"]
    lines.append("|---" * (len(shots) + 2) + "|")
    for method, row in s["few_shot"].items():
        zero = f"{100 * s['zero_shot']:.1f}" if method != "ridge" else "—"
        lines.append(f"| {method} | {zero} | " + " | ".join(f"{100 * row[n]:.1f}" for n in shots) + " |")
    lines.append(f"| chance | {100 * s['chance_top5']:.1f} | " + " | ".join("" for _ in shots) + " |")
    if "within" in s:
        w = s["within"]
        lines.append("")
        lines.append(
            f"Within-subject ({result['subjects'][0]['within']['n_trials']} trials): from scratch "
            f"{100 * w['scratch']:.1f}, ridge {100 * w['ridge']:.1f}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m brainstream.calibration.population``: zero-shot and few-shot on held-out subjects."""
    from brainstream.calibration.protocol import load_protocol
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--protocol", default="rsvp", help="calibration protocol (name or path)")
    parser.add_argument("--shared-fraction", type=float, default=None, help="None: the protocol's")
    parser.add_argument("--held-out", type=int, nargs="+", required=True, help="held-out subject seeds")
    parser.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--within-trials", type=int, default=600, help="0: no within-subject model")
    parser.add_argument(
        "--zero-shot-only", action="store_true",
        help="only zero-shot (and AdaBN): no few-shot curves, no within-subject model",
    )  # fmt: skip
    parser.add_argument(
        "--train-images", type=int, default=None,
        help="training images of each held-out session at least (its scaler and AdaBN use them, "
        f"unlabelled); default: {ZERO_SHOT_TRAIN_IMAGES} with --zero-shot-only, else what the shots and "
        "--within-trials need",
    )  # fmt: skip
    parser.add_argument(
        "--pretrained", default=None,
        help="evaluate this pretrained encoder folder (e.g. a shipped one) instead of pretraining",
    )  # fmt: skip
    parser.add_argument(
        "--session-cache", default=None,
        help="folder that keeps simulated sessions for the next run (development comparisons); default none",
    )  # fmt: skip
    parser.add_argument("--baseline", default=None, help="a result JSON: paired zero-shot difference to it")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=None, help="default: the protocol's")
    parser.add_argument("--pretrain-images", type=int, default=None, help="default: the protocol's")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default: the protocol's")
    parser.add_argument(
        "--subject-dropout", type=float, default=None,
        help="pretraining's subject dropout (the trained subject-agnostic path); default: the protocol's",
    )  # fmt: skip
    parser.add_argument("--pretrain-time-shift", type=int, default=None, help="pretraining augmentation")
    parser.add_argument("--pretrain-noise", type=float, default=None, help="pretraining augmentation")
    parser.add_argument(
        "--pretrain-sign-flip", type=float, default=None,
        help="pretraining augmentation: probability of flipping a trial's polarity",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.zero_shot_only:
        args.shots, args.methods, args.within_trials = [], [], 0
    if args.train_images is None:
        args.train_images = ZERO_SHOT_TRAIN_IMAGES if args.zero_shot_only else 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    config = load_protocol(args.protocol)
    if args.shared_fraction is not None:
        config = config.model_copy(
            update={"subject": config.subject.model_copy(update={"shared_fraction": args.shared_fraction})}
        )
    pre = {
        "seeds": args.pretrain_seeds,
        "n_train_images": args.pretrain_images,
        "max_epochs": args.pretrain_epochs,
    }
    pre = {k: v for k, v in pre.items() if v is not None}
    if args.subject_dropout is not None:
        pre["model"] = {**config.pretrained.model, "subject_dropout": args.subject_dropout}
    augment = {
        "time_shift": args.pretrain_time_shift,
        "noise_std": args.pretrain_noise,
        "sign_flip": args.pretrain_sign_flip,
    }
    augment = {k: v for k, v in augment.items() if v is not None}
    if augment:
        pre["augment"] = {**config.pretrained.augment, **augment}
    if pre:
        config = config.model_copy(update={"pretrained": config.pretrained.model_copy(update=pre)})
    gallery = Gallery.load(default_gallery_dir())
    result = run_population(
        config, gallery, args.held_out, args.shots, args.methods, args.within_trials or None,
        scaler_trials=args.train_images, session_cache=args.session_cache and Path(args.session_cache),
        pretrained=args.pretrained and Path(args.pretrained),
    )  # fmt: skip
    if args.baseline:
        result["compared"] = compare(result, json.loads(Path(args.baseline).read_text()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
