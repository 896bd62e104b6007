"""Few-shot adaptation on synthetic multi-subject data with a known structure.

Every subject sees the same image-driven source activity (a nonlinear function of the image embedding) through
its own sensor mixing, as in the virtual subject. A brain module pretrained on three subjects is adapted to a
fourth, unseen mixing: adaptation must help over zero-shot, choices must come from validation only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from brainstream.calibration.adaptation import (
    adapt,
    anchor_align,
    average_weights,
    image_folds,
    init_head_ridge,
    score_test,
    subject_model,
    val_score,
)
from brainstream.calibration.population import (
    METHODS,
    bootstrap_ci,
    compare,
    evaluate_data,
    few_shot_model,
    markdown_table,
    summarize,
)
from brainstream.calibration.protocol import AdaptationConfig, ProtocolConfig
from brainstream.models.checkpoint import load_checkpoint
from brainstream.models.training.data import DataError, EncodingData, concatenate

C, T, D, K = 12, 20, 16, 4
N_IMAGES = 160


def _world(seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((N_IMAGES, D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    W = rng.standard_normal((K, D)) * 2.0
    kernels = np.stack([np.sin(np.linspace(0, np.pi * (k + 1), T)) for k in range(K)])
    sources = np.tanh(emb @ W.T)[:, :, None] * kernels[None]  # (images, K, T): nonlinear in the embedding
    return emb, sources, rng.random((C, 2))


def _subject(name: str, seed: int, emb, sources, positions, images, test_images, noise=0.3) -> EncodingData:
    rng = np.random.default_rng(seed + 100)
    mix = rng.standard_normal((C, K))
    ids = list(images) + [i for i in test_images for _ in range(2)]
    X = np.stack([mix @ sources[i] for i in ids]) + noise * rng.standard_normal((len(ids), C, T))
    return EncodingData(
        X=X.astype(np.float32), image_ids=np.array([f"im{i}" for i in ids]),
        splits=np.array(["train"] * len(images) + ["test"] * 2 * len(test_images)),
        subjects=np.zeros(len(ids), np.int64), subject_names=[name], targets=emb[ids],
        ch_names=[f"c{i}" for i in range(C)],
        sfreq=50.0, tmin=0.0, space="synthetic", positions=positions,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from brainstream.models.training.config import DataConfig, OptimConfig, SelectionConfig, TrainingConfig
    from brainstream.models.training.trainer import train

    emb, sources, positions = _world()
    test_images = np.arange(20)
    pretrain = concatenate(
        [
            _subject(f"s{k}", k, emb, sources, positions, np.arange(20, N_IMAGES), test_images)
            for k in range(3)
        ]
    )
    cfg = TrainingConfig(
        data=DataConfig(kind="simulated"),
        model={"name": "brain_module", "spatial_channels": 8, "fourier_freqs": 4, "hidden": 16, "depth": 1,
               "out_channels": 32, "spatial_dropout": 0.0},
        optim=OptimConfig(lr=5e-3, batch_size=64, max_epochs=15, patience=15),
        selection=SelectionConfig(val_fraction=0.1), device="cpu", num_threads=1,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("pretrained") / "model"
    train(cfg, out, data=pretrain, progress=False)
    rng = np.random.default_rng(7)
    new = _subject(
        "new", 42, emb, sources, positions, rng.permutation(np.arange(20, N_IMAGES))[:100], test_images
    )
    return out, new


def protocol(**adaptation) -> ProtocolConfig:
    return ProtocolConfig(
        n_way=20,
        adaptation=AdaptationConfig(
            modes=["subject_layer", "light"], trunk_lr_factors=[0.3], lr=1e-2, max_epochs=12, patience=5,
            val_fraction=0.2,
            learning_curve=[40],
            **adaptation,
        ),
    )  # fmt: skip


# the plain recipe, and the rsvp one: augmentation, ridge-initialised read-out, a 3-fold soup
RECIPES = {
    "plain": {},
    "soup": {"time_shift": 2, "noise_std": 0.1, "head_init": "ridge", "soup_folds": 3},
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_adaptation_beats_zero_shot_and_selects_on_validation(world, recipe):
    pretrained, new = world
    config = protocol(**RECIPES[recipe])
    res = adapt(pretrained, new, config, progress=False)
    assert res.n_way == 20 and res.chance_top5 == pytest.approx(0.25)
    # the adapted subject layer recovers the new subject's mixing: better than zero-shot and chance
    assert res.adapted.test["top5"] > res.zero_shot.test["top5"]
    assert res.adapted.test["top5"] > 2 * res.chance_top5
    assert res.adapted.val["mean_rank"] <= res.zero_shot.val["mean_rank"]
    assert res.chosen is min([res.adapted, res.ridge], key=lambda r: r.val["mean_rank"])
    assert res.adapted.name.split("@")[0].split("+")[0] in {f"adapted:{m}" for m in config.adaptation.modes}
    if config.adaptation.soup_folds > 1:
        # the soup is the recipe chosen on validation, trained on every fold: it carries that recipe's score
        recipe_result = min(res.candidates[:-1], key=lambda r: r.val["mean_rank"])
        assert res.adapted.name == f"{recipe_result.name}+soup3"
        assert res.adapted.val == recipe_result.val and res.adapted.model is not recipe_result.model
        assert 0 < res.adapted.log["soup"]["cv"]["mean_rank"] < 0.5
    assert [r["n_trials"] for r in res.learning_curve] == [40, res.n_train + res.n_val]
    for m in (res.zero_shot, res.ridge, res.adapted):
        assert set(m.test) >= {"top1", "top5", "single_trial", "n_way"}
    # the test set plays no part in any choice: scrambling its signals changes test numbers only
    scrambled = replace(new, X=new.X.copy())
    test = scrambled.splits == "test"
    scrambled.X[test] = np.random.default_rng(1).standard_normal(scrambled.X[test].shape).astype(np.float32)
    res2 = adapt(pretrained, scrambled, config, progress=False)
    assert res2.chosen.name == res.chosen.name and res2.adapted.name == res.adapted.name
    assert res2.adapted.val == res.adapted.val and res2.ridge.val == res.ridge.val
    weights, weights2 = res.adapted.model.state_dict(), res2.adapted.model.state_dict()
    assert weights.keys() == weights2.keys()
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)  # the exported weights too


def test_image_folds_hold_out_every_training_image_once(world):
    _, new = world
    folds = image_folds(new, 4, seed=3)
    held = [set(va.image_ids.tolist()) for _, va in folds]
    train_images = set(new.image_ids[new.splits == "train"].tolist())
    assert set().union(*held) == train_images and sum(len(h) for h in held) == len(train_images)
    for tr, va in folds:
        assert not set(tr.image_ids.tolist()) & set(va.image_ids.tolist())
        assert (tr.splits == "train").all() and (va.splits == "train").all()  # the test split stays out
    with pytest.raises(DataError, match="soup_folds"):
        image_folds(new.subset(np.flatnonzero(new.splits == "train")[:5]), 4)


def test_model_soup_averages_weights_and_remeasures_batchnorm(world):
    from brainstream.models.checkpoint import load_checkpoint

    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    a = subject_model(model, meta)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1)
    x = torch.from_numpy(new.X[:8])
    same = average_weights([a, copy.deepcopy(a)])
    assert torch.allclose(same(x, None), a(x, None), atol=1e-6)
    soup = average_weights([a, b], bn_data=new.X)
    for (name, pa), pb, ps in zip(a.named_parameters(), b.parameters(), soup.parameters(), strict=True):
        assert torch.allclose(ps, (pa + pb) / 2, atol=1e-6), name
    norms = [m for m in soup.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and not soup.training
    ref = [m for m in a.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    # statistics measured on this subject's windows, not the pretrained ones
    assert not torch.allclose(norms[0].running_mean, ref[0].running_mean)


def test_ridge_head_init_fits_the_read_out_on_the_trunk_features(world):
    from brainstream.models.checkpoint import load_checkpoint

    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    train = new.split("train")
    m = subject_model(model, meta)
    before = val_score(m, train)["mean_rank"]
    log = init_head_ridge(m, train)
    assert log["alpha"] > 0
    # a least-squares read-out of this subject's training trials ranks them better than the pretrained one
    assert val_score(m, train)["mean_rank"] < before


def test_subject_model_starts_from_the_mean_subject_layer(world):
    import torch

    from brainstream.models.checkpoint import load_checkpoint

    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    single = subject_model(model, meta)
    assert single.subject_layer.weight.shape[0] == 1
    x = torch.from_numpy(new.X[:4])
    assert torch.allclose(single(x, None), model(x, None), atol=1e-5)  # zero-shot == mean layer
    metrics = score_test(single, new.split("test"), n_way=20)
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0


def test_subject_model_starts_from_the_shared_layer_of_subject_dropout(world, tmp_path):
    from brainstream.models.checkpoint import load_checkpoint

    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    arch = dict(meta.arch, subject_dropout=0.3, positions=meta.positions)
    from brainstream.models.encoders import build_encoder

    dropped = build_encoder(arch)
    state = model.state_dict()
    state["subject_layer.shared"] = 0.5 * torch.eye(state["subject_layer.weight"].shape[1])
    dropped.load_state_dict(state)
    dropped.eval()
    single = subject_model(dropped, meta.model_copy(update={"arch": {**meta.arch, "subject_dropout": 0.3}}))
    assert single.subject_layer.weight.shape[0] == 1 and not hasattr(single.subject_layer, "shared")
    x = torch.from_numpy(new.X[:4])
    assert torch.allclose(single(x, None), dropped(x, None), atol=1e-5)  # zero-shot == the shared layer
    assert not torch.allclose(single(x, None), model(x, None), atol=1e-4)  # not the mean of the others
    # the new person's model saves and loads as a one-subject checkpoint (as calibration writes it)
    from brainstream.calibration.adaptation import one_subject_arch
    from brainstream.models.checkpoint import save_checkpoint

    out = tmp_path / "subject"
    arch = one_subject_arch({**meta.arch, "subject_dropout": 0.3})
    assert arch["subject_dropout"] == 0.0 and arch["n_subjects"] == 1
    save_checkpoint(out, single, meta.model_copy(update={"arch": arch}))
    loaded, _ = load_checkpoint(out)
    assert torch.allclose(loaded(x, None), single(x, None), atol=1e-5)


def test_refuses_a_test_that_is_not_zero_shot_or_other_channels(world, tmp_path):
    import shutil

    pretrained, new = world
    leaky = tmp_path / "leaky"
    shutil.copytree(pretrained, leaky)
    (leaky / "train_images.json").write_text(json.dumps(["im3", "im99"]))
    with pytest.raises(DataError, match="not a zero-shot test"):
        adapt(leaky, new, protocol(), progress=False)
    other = replace(new, ch_names=[f"x{i}" for i in range(C)])
    with pytest.raises(Exception, match="channel"):
        adapt(pretrained, other, protocol(), progress=False)


# ------------------------------------------------------------------ across people (calibration.population)
def test_anchor_alignment_competes_on_validation_and_draws_its_curve(world):
    pretrained, new = world
    config = protocol()
    config = config.model_copy(
        update={"adaptation": config.adaptation.model_copy(update={"modes": ["subject_layer", "anchor"]})}
    )
    res = adapt(pretrained, new, config, progress=False)
    names = [c.name for c in res.candidates]
    assert names == ["adapted:subject_layer", "adapted:anchor", "ridge"]
    assert res.adapted.name.startswith(min(res.candidates[:-1], key=lambda r: r.val["mean_rank"]).name)
    assert all("anchor" in row for row in res.learning_curve)
    # anchors re-map the shared trunk's features for this subject: better than the population-mean path
    anchor = next(c for c in res.candidates if c.name == "adapted:anchor")
    assert anchor.test["top5"] > res.zero_shot.test["top5"]
    assert anchor.log["mode"] == "anchor" and anchor.log["head_init"]["alpha"] > 0


def test_anchor_alignment_trains_nothing_but_the_read_out(world):
    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    base = subject_model(model, meta)
    aligned, _ = anchor_align(base, new.split("train"))
    before, after = base.state_dict(), aligned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last = len(base.clip_head) - 1
    assert changed == {f"clip_head.{last}.weight", f"clip_head.{last}.bias"}


def test_few_shot_curves_per_method_with_chance_ridge_and_within(world):
    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    config = protocol()
    out = evaluate_data(model, meta, new, config, [40, 80], list(METHODS), within_trials=100)
    assert out["n_way"] == 20 and out["chance_top5"] == pytest.approx(0.25)
    assert set(out["few_shot"]) == {*METHODS, "ridge"}
    for rows in out["few_shot"].values():
        assert [r["n_trials"] for r in rows] == [40, 80]
        assert all(0 <= r["top5"] <= 1 for r in rows)
    # with 80 trials of the new subject every population method beats chance and zero-shot
    for method in METHODS:
        assert out["few_shot"][method][-1]["top5"] > max(out["chance_top5"], out["zero_shot"]["top5"]), method
    assert set(out["within"]) == {"n_trials", "scratch", "ridge"}
    # AdaBN is its own row (it reads the subject's unlabelled windows); no shared layer: no ablation row
    assert 0 <= out["unsupervised"]["top5"] <= 1 and "zero_shot_mean_layers" not in out
    summary = summarize([{"seed": 1, **out}, {"seed": 2, **out}])
    assert summary["few_shot"]["anchor"]["80"] == pytest.approx(out["few_shot"]["anchor"][1]["top5"])
    table = markdown_table({"summary": summary, "subjects": [out]})
    assert "| anchor |" in table and "n = 40" in table and "chance" in table and "AdaBN" in table
    with pytest.raises(ValueError, match="fewer than the shots"):
        evaluate_data(model, meta, new, config, [500], ["anchor"], within_trials=None)
    with pytest.raises(ValueError, match="unknown few-shot method"):
        few_shot_model(subject_model(model, meta), new.split("train"), "magic", config)


def test_zero_shot_only_scores_each_test_image_and_compares_paired(world):
    pretrained, new = world
    model, meta = load_checkpoint(pretrained)
    out = evaluate_data(model, meta, new, protocol(), [], [], within_trials=None)
    assert out["few_shot"] == {} and "within" not in out
    for row in ("zero_shot", "unsupervised"):
        hits = out[row]["hits"]  # one 0/1 per test image: what the confidence interval resamples
        assert len(hits) == len(np.unique(new.image_ids[new.splits == "test"])) and set(hits) <= {0, 1}
        assert np.mean(hits) == pytest.approx(out[row]["top5"])
    subjects = [{"seed": 1, **out}, {"seed": 2, **out}]
    summary = summarize(subjects)
    ci = summary["zero_shot_ci"]
    assert summary["few_shot"] == {} and ci["lo"] <= summary["zero_shot"] == ci["mean"] <= ci["hi"]
    result = {"summary": summary, "subjects": subjects, "held_out": [1, 2], "pretrained": {"path": "p"}}
    same = compare(result, result)["zero_shot_difference"]
    assert same["mean"] == same["lo"] == same["hi"] == 0.0  # a model against itself, image by image
    table = markdown_table(result)
    assert "Zero-shot top-5" in table and "CI" in table and "| method |" not in table
    with pytest.raises(ValueError, match="no held-out subject in common"):
        compare(result, {**result, "subjects": [{**subjects[0], "seed": 9}]})


def test_bootstrap_interval_covers_subjects_and_images():
    rng = np.random.default_rng(0)
    flat = [np.full(50, 0.2) for _ in range(8)]  # no spread at all: the interval is the mean
    ci = bootstrap_ci(flat)
    assert ci["mean"] == pytest.approx(0.2) and ci["lo"] == pytest.approx(0.2) == ci["hi"]
    hits = [(rng.random(50) < p).astype(int) for p in np.linspace(0.05, 0.35, 8)]
    wide = bootstrap_ci(hits)
    assert wide["lo"] < wide["mean"] < wide["hi"] and wide["mean"] == pytest.approx(np.mean(hits))
    # the same per-subject rates without the spread between subjects: a narrower interval
    pooled = np.concatenate(hits)
    narrow = bootstrap_ci([rng.permutation(pooled)[:50] for _ in range(8)])
    assert narrow["hi"] - narrow["lo"] < wide["hi"] - wide["lo"]
    more = bootstrap_ci(hits * 4)
    assert more["hi"] - more["lo"] < wide["hi"] - wide["lo"]  # more subjects: a tighter estimate
    with pytest.raises(ValueError, match="same number of test images"):
        bootstrap_ci([np.ones(50), np.ones(40)])
    with pytest.raises(ValueError, match="at least one subject"):
        bootstrap_ci([])
