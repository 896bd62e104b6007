"""Reconstruction metrics: 2-way identification, PixCorr, SSIM and bootstrap CIs on real images."""

from __future__ import annotations

import numpy as np
import pytest

from brainstream.models.embedders import get_embedder
from brainstream.models.reconstruction import (
    bootstrap_ci,
    format_table,
    hog_features,
    pixcorr_scores,
    randconv_features,
    score_reconstructions,
    shuffled,
    ssim_scores,
    two_way_scores,
)
from brainstream.models.stimuli import procedural_images


@pytest.fixture(scope="module")
def stimuli():
    return [im for _, im, _ in procedural_images(12, seed=2, size=64)]


def test_two_way_counts_the_other_candidates_beaten():
    cands = np.eye(4, dtype=np.float32) + 0.01
    perfect = two_way_scores(cands, cands, np.arange(4))
    assert np.allclose(perfect, 1.0)
    wrong = two_way_scores(cands, cands, np.array([1, 2, 3, 0]))
    assert np.allclose(wrong, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        two_way_scores(cands[:1], cands[:1], np.array([0]))


def test_stimuli_identify_themselves_and_shuffled_pairs_sit_near_chance(stimuli):
    embed = get_embedder("demo").embed
    own = score_reconstructions(stimuli, range(len(stimuli)), stimuli, embed, n_boot=200)
    for key in ("two_way_embedding", "two_way_hog", "two_way_randconv", "pixcorr", "ssim"):
        assert own[key]["mean"] == pytest.approx(1.0, abs=1e-6)
    wrong = shuffled(range(len(stimuli)), len(stimuli), seed=1)
    assert not np.any(wrong == np.arange(len(stimuli)))
    chance = score_reconstructions(stimuli, wrong, stimuli, embed, n_boot=200)
    assert chance["two_way_embedding"]["mean"] < 0.8 and chance["ssim"]["mean"] < 0.9
    assert chance["two_way_randconv"]["mean"] < 0.8
    assert "2-way (rand-conv)" in format_table({"own": own, "chance": chance})


def test_pixcorr_and_ssim_fall_as_an_image_is_degraded(stimuli):
    rng = np.random.default_rng(0)
    noisy = [np.clip(s + rng.normal(0, 40, s.shape), 0, 255).astype(np.uint8) for s in stimuli]
    assert np.all(pixcorr_scores(noisy, stimuli, 64) < 0.999)
    assert np.all(ssim_scores(noisy, stimuli, 64) < ssim_scores(stimuli, stimuli, 64))
    assert hog_features(stimuli).shape[0] == len(stimuli)


def test_randconv_space_is_another_network_than_the_demo_embedder(stimuli):
    from brainstream.models.embedders.demo import WEIGHT_SEED

    ours, demos = randconv_features(stimuli), randconv_features(stimuli, seed=WEIGHT_SEED)
    assert ours.shape == demos.shape and ours.shape[0] == len(stimuli)
    assert not np.allclose(ours, demos)


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    small, large = bootstrap_ci(rng.random(20)), bootstrap_ci(rng.random(2000))
    assert small["ci_low"] <= small["mean"] <= small["ci_high"]
    assert (large["ci_high"] - large["ci_low"]) < (small["ci_high"] - small["ci_low"])
    with pytest.raises(ValueError, match="no scores"):
        bootstrap_ci(np.array([]))
