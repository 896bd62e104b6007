"""The virtual population: subjects share a code by ``shared_fraction``; at 0, simulator v1's subjects.

Real response models and real virtual subjects (mne forward model, cached after the first run) on a small
random gallery.
"""

from __future__ import annotations

import numpy as np
import pytest

from brainstream.models.device_profile import load_device_profile
from brainstream.models.gallery import Gallery
from brainstream.realtime.simulation import VirtualSubject
from brainstream.realtime.simulation.forward import load_forward
from brainstream.realtime.simulation.responses import ResponseModel, ResponseParams

EEG = "eeg64_1000hz"


@pytest.fixture(scope="module")
def gallery() -> Gallery:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((80, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Gallery(emb, [f"img{i:03d}" for i in range(80)], space="test:random:32")


@pytest.fixture(scope="module")
def eeg_forward():
    return load_forward(load_device_profile(EEG))


def _model(gallery: Gallery, seed: int, fraction: float, population: int = 0) -> ResponseModel:
    params = ResponseParams(shared_fraction=fraction, population_seed=population)
    return ResponseModel(gallery.embeddings, 100.0, np.random.default_rng([seed, 1]), params)


def _cosines(a: ResponseModel, b: ResponseModel) -> np.ndarray:
    return np.sum(a.dirs * b.dirs, axis=1)


def test_shared_fraction_zero_is_the_version_1_subject(gallery):
    """v1 drew each feature's direction, then its latency direction, from the subject's generator first."""
    p = ResponseParams(shared_fraction=0.0)
    rng = np.random.default_rng([3, 1])
    model = ResponseModel(gallery.embeddings, 100.0, rng, p)
    again = np.random.default_rng([3, 1])
    dirs = again.standard_normal((p.n_evoked + p.n_induced, model.basis.shape[0]))
    np.testing.assert_array_equal(model.dirs, dirs / np.linalg.norm(dirs, axis=1, keepdims=True))
    assert model.population_rois is None
    # the regions are the subject's own draw, taken where v1 took them
    names = model.roi_names(rng)
    assert len(names) == model.n_sources


def test_only_the_code_is_shared(gallery):
    """Same seed, other fraction: every individual draw (gains, thresholds, latencies, rest of the generator)
    is unchanged; directions and regions move towards the population's."""
    own, shared = _model(gallery, 5, 0.0), _model(gallery, 5, 0.5)
    for name in ("thresholds", "gains", "evoked_latency", "induced_freq", "common_latency"):
        np.testing.assert_array_equal(getattr(own, name), getattr(shared, name))
    assert not np.allclose(own.dirs, shared.dirs)
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    rois_own, rois_shared = own.roi_names(rng_a), shared.roi_names(rng_b)
    assert rng_a.random() == rng_b.random()  # the generator ends where v1's did: positions etc. unchanged
    assert rois_shared[: own.n_feature_sources] == shared.population_rois
    assert rois_own[own.n_feature_sources :] == rois_shared[own.n_feature_sources :]


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.75])
def test_between_subject_cosine_follows_shared_fraction(gallery, fraction):
    models = [_model(gallery, seed, fraction) for seed in range(6)]
    cos = np.concatenate([_cosines(a, b) for i, a in enumerate(models) for b in models[i + 1 :]])
    # 15 pairs x 40 features; the spread of one cosine in 24 dimensions is about 0.2
    assert abs(cos.mean() - fraction) < 0.05, (fraction, cos.mean())


def test_populations_differ_and_fraction_one_is_one_code(gallery):
    a, b = _model(gallery, 1, 1.0), _model(gallery, 2, 1.0)
    np.testing.assert_allclose(a.dirs, b.dirs)
    other = _model(gallery, 1, 1.0, population=1)
    assert np.abs(_cosines(a, other)).mean() < 0.4
    with pytest.raises(ValueError, match="shared_fraction must be between 0"):
        ResponseParams(shared_fraction=1.5)


def test_virtual_subject_takes_and_reports_the_fraction(gallery, eeg_forward):
    own = VirtualSubject(EEG, gallery, seed=4, forward=eeg_forward, shared_fraction=0.0)
    shared = VirtualSubject(EEG, gallery, seed=4, forward=eeg_forward, shared_fraction=0.5)
    assert own.metadata()["shared_fraction"] == 0.0 and shared.metadata()["shared_fraction"] == 0.5
    # individual anatomy beyond the feature regions, head and noise are the subject's own either way
    assert own.bad_channels == shared.bad_channels
    assert own.source_rois[-4:] == shared.source_rois[-4:]
    np.testing.assert_array_equal(own.generate(500), shared.generate(500))  # no stimulus: background only
