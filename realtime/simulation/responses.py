"""Stimulus-evoked source activity of the virtual subject: a NONLINEAR function of the image embedding.

Each subject (seeded) has a set of *feature sources* in occipito-temporal cortex. Feature ``k`` reads a
random direction of the whitened embedding, ``u_k = a_k · z``, and responds only when ``u_k`` passes a
threshold (sparse rectified tuning, as category-selective patches do). Two kinds of feature source:

- *evoked* (phase-locked): a damped oscillation 80-450 ms after onset whose amplitude is ``relu(u_k - θ_k)``
  and whose latency shifts by up to ±30 ms with a second direction ``tanh(v_k)``;
- *induced* (not phase-locked): a 14-30 Hz burst whose envelope is ``relu(u_k - θ_k)`` but whose phase is
  random on every trial, so averaging or any linear read-out of the raw signal sees nothing and only a
  nonlinear (power-like) read-out recovers it, as with induced responses in real visual cortex.

On top, image-independent early visual responses (P1/N1-like, bilateral V1 and lateral occipital), and an
offset response after the image disappears. Trials vary: a common latency jitter, per-source latency jitter
and a log-normal gain, so single trials are noisy copies of the image's mean response.

The directions are drawn in a whitened PCA space of the gallery (so each feature varies across images).

**A population.** Subjects of one population share a code: feature ``k``'s reading direction (and latency
direction) is ``√f · p_k + √(1 − f) · s_k``, renormalised, where ``p_k`` is drawn once for the population
(``population_seed``) and ``s_k`` from the subject's seed, so two subjects' directions for one feature have
cosine ≈ ``f = shared_fraction``; with ``f > 0`` feature ``k`` also sits in the population's region (its
position within the region and its orientation stay the subject's own). Everything else depends on the
subject seed alone: positions, orientations, gains, thresholds, latencies, frequencies, SNR scaling, head
and bad channels. ``shared_fraction = 0`` is the subject of simulator v1 exactly (nothing shared, the same
random draws): earlier figures can be re-made with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Occipito-temporal regions of interest, fsaverage MRI coordinates (mm): left hemisphere, mirrored for right.
ROIS_MM = {
    "V1": (-8.0, -92.0, 2.0),
    "V2d": (-12.0, -88.0, 18.0),
    "V4": (-30.0, -78.0, -10.0),
    "LO": (-42.0, -78.0, -4.0),
    "FFA": (-38.0, -52.0, -18.0),
    "PPA": (-26.0, -44.0, -10.0),
    "IT": (-50.0, -40.0, -20.0),
    "IPS": (-26.0, -64.0, 44.0),
}
ALPHA_ROIS_MM = {"calcarine": (-10.0, -84.0, 8.0), "parieto-occipital": (-14.0, -70.0, 30.0)}
COMMON_ROIS = ("V1", "LO")
# The default share of the population code (docs/reproducing.md, "A virtual population"; chosen before any
# held-out subject was looked at): half of each feature direction's variance comes from the population.
DEFAULT_SHARED_FRACTION = 0.5


@dataclass(frozen=True)
class ResponseParams:
    """Response-model settings (defaults are the virtual subject's)."""

    n_evoked: int = 16
    n_induced: int = 24
    n_pca: int = 24
    # thresholds of the rectified tuning: each feature fires for roughly 15-40 % of images
    threshold_range: tuple[float, float] = (0.3, 1.0)
    # induced bursts carry most of the image information: invisible to linear read-outs of the raw signal
    induced_gain: float = 3.0
    response_len_s: float = 0.6
    trial_latency_jitter_s: float = 0.012
    source_latency_jitter_s: float = 0.008
    trial_gain_sigma: float = 0.25
    offset_gain: float = 0.4
    common_gain: float = 3.0
    # the population code: share of each feature direction drawn for the population, and its seed
    shared_fraction: float = DEFAULT_SHARED_FRACTION
    population_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shared_fraction <= 1.0:
            raise ValueError(
                "shared_fraction must be between 0 (nothing shared) and 1 (one code), "
                f"got {self.shared_fraction}"
            )


class ResponseModel:
    """Per-subject map from an image embedding to source time courses (unit-scaled; the subject scales them).

    Parameters
    ----------
    embeddings : ndarray, shape (n_images, dim)
        The gallery's embeddings; they fix the whitened space the features read from.
    sfreq : float
        Sampling rate of the generated data.
    rng : numpy.random.Generator
        The subject's generator (seeded); consumed here only at construction.
    params : ResponseParams
        Model sizes and trial-variability settings.
    """

    def __init__(
        self, embeddings: np.ndarray, sfreq: float, rng: np.random.Generator, params: ResponseParams
    ) -> None:
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] < 3:
            raise ValueError(f"need a gallery of at least 3 embeddings (n, dim); got shape {emb.shape}")
        self.params = params
        self.sfreq = float(sfreq)
        self.mean = emb.mean(0)
        _, s, vt = np.linalg.svd(emb - self.mean, full_matrices=False)
        n_pca = int(min(params.n_pca, len(s) - 1, emb.shape[1]))
        # whitening: each PCA axis gets unit variance across the gallery
        self.basis = vt[:n_pca] / np.maximum(s[:n_pca, None], 1e-12) * np.sqrt(emb.shape[0])
        n_feat = params.n_evoked + params.n_induced
        dirs = rng.standard_normal((n_feat, n_pca))
        self.dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        lat_dirs = rng.standard_normal((params.n_evoked, n_pca))
        self.lat_dirs = lat_dirs / np.linalg.norm(lat_dirs, axis=1, keepdims=True)
        self.thresholds = rng.uniform(*params.threshold_range, n_feat)
        self.gains = rng.lognormal(0.0, 0.3, n_feat)
        self.gains[params.n_evoked :] *= params.induced_gain
        self.evoked_latency = rng.uniform(0.10, 0.35, params.n_evoked)
        self.evoked_width = rng.uniform(0.025, 0.06, params.n_evoked)
        self.evoked_freq = rng.uniform(2.0, 6.0, params.n_evoked)
        self.evoked_phase = rng.uniform(0, 2 * np.pi, params.n_evoked)
        self.induced_latency = rng.uniform(0.15, 0.35, params.n_induced)
        self.induced_width = rng.uniform(0.06, 0.11, params.n_induced)
        self.induced_freq = rng.uniform(14.0, 30.0, params.n_induced)
        self.common_latency = np.array([0.10, 0.10, 0.17, 0.17]) + rng.normal(0, 0.01, 4)
        self.population_rois: list[str] | None = None
        if params.shared_fraction > 0:
            pop = PopulationCode(n_feat, params.n_evoked, n_pca, params.population_seed)
            self.dirs = _mix(pop.dirs, self.dirs, params.shared_fraction)
            self.lat_dirs = _mix(pop.lat_dirs, self.lat_dirs, params.shared_fraction)
            self.population_rois = pop.rois
        self.n_len = int(round(params.response_len_s * self.sfreq))
        self.t = np.arange(self.n_len) / self.sfreq

    # ------------------------------------------------------------------ source layout
    @property
    def n_feature_sources(self) -> int:
        return self.params.n_evoked + self.params.n_induced

    @property
    def n_sources(self) -> int:
        """Feature sources followed by the 4 common sources (V1 L/R, LO L/R)."""
        return self.n_feature_sources + 4

    def roi_names(self, rng: np.random.Generator) -> list[str]:
        """ROI of each source (feature sources: the population's, or drawn at random; common ones fixed).

        The subject's own draw is always made, so that the generator reaches the same state either way.
        """
        feats = _draw_rois(rng, self.n_feature_sources)
        if self.population_rois is not None:
            feats = list(self.population_rois)
        return feats + ["V1-L", "V1-R", "LO-L", "LO-R"]

    # ------------------------------------------------------------------ responses
    def features(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectified feature amplitudes ``(n_feature_sources,)`` and latency drives ``(n_evoked,)``."""
        z = self.basis @ (np.asarray(embedding, dtype=np.float64) - self.mean)
        u = self.dirs @ z
        amp = self.gains * np.maximum(u - self.thresholds, 0.0)
        lat = np.tanh(self.lat_dirs @ z)
        return amp, lat

    def trial(self, embedding: np.ndarray, rng: np.random.Generator, *, offset: bool = False) -> np.ndarray:
        """Source time courses ``(n_sources, n_len)`` of one presentation, starting at the onset (or offset).

        Parameters
        ----------
        embedding : ndarray, shape (dim,)
            The image's embedding.
        rng : numpy.random.Generator
            Trial-level randomness (latency jitter, gains, induced phases).
        offset : bool
            The response to the image's disappearance: the common part plus a weaker copy of the features.
        """
        p = self.params
        amp, lat_drive = self.features(embedding)
        jitter = rng.normal(0.0, p.trial_latency_jitter_s)
        out = np.zeros((self.n_sources, self.n_len))
        ne = p.n_evoked
        feat_gain = (p.offset_gain if offset else 1.0) * rng.lognormal(0.0, p.trial_gain_sigma)
        lat = self.evoked_latency + 0.03 * lat_drive + jitter + rng.normal(0, p.source_latency_jitter_s, ne)
        dt = self.t[None, :] - lat[:, None]
        env = np.exp(-0.5 * (dt / self.evoked_width[:, None]) ** 2)
        out[:ne] = (
            (feat_gain * amp[:ne, None])
            * env
            * np.cos(2 * np.pi * self.evoked_freq[:, None] * dt + self.evoked_phase[:, None])
        )
        lat_i = self.induced_latency + jitter + rng.normal(0, p.source_latency_jitter_s, p.n_induced)
        dti = self.t[None, :] - lat_i[:, None]
        env_i = np.exp(-0.5 * (dti / self.induced_width[:, None]) ** 2)
        phase = rng.uniform(0, 2 * np.pi, p.n_induced)
        out[ne : self.n_feature_sources] = (
            (feat_gain * amp[ne:, None])
            * env_i
            * np.cos(2 * np.pi * self.induced_freq[:, None] * self.t[None, :] + phase[:, None])
        )
        # image-independent P1 (V1) and N1 (LO): a biphasic wave per source
        common_gain = p.common_gain * (0.6 if offset else 1.0) * rng.lognormal(0.0, 0.15)
        lat_c = self.common_latency + jitter
        dtc = self.t[None, :] - lat_c[:, None]
        out[self.n_feature_sources :] = (
            common_gain * np.exp(-0.5 * (dtc / 0.03) ** 2) * np.cos(2 * np.pi * 5.0 * dtc)
        )
        return out


class PopulationCode:
    """The population's draw of each feature: reading direction, latency direction and region.

    Parameters
    ----------
    n_features, n_evoked, n_pca : int
        The response model's sizes (features, evoked features among them, whitened dimensions).
    seed : int
        The population; every subject of it shares this draw.
    """

    def __init__(self, n_features: int, n_evoked: int, n_pca: int, seed: int = 0) -> None:
        rng = np.random.default_rng([int(seed), 0x9F0])
        self.dirs = _unit(rng.standard_normal((n_features, n_pca)))
        self.lat_dirs = _unit(rng.standard_normal((n_evoked, n_pca)))
        self.rois = _draw_rois(rng, n_features)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _mix(shared: np.ndarray, own: np.ndarray, fraction: float) -> np.ndarray:
    """Unit directions whose expected cosine with ``shared`` (and between two subjects) is ``fraction``."""
    return _unit(np.sqrt(fraction) * shared + np.sqrt(1.0 - fraction) * own)


def _draw_rois(rng: np.random.Generator, n: int) -> list[str]:
    names = list(ROIS_MM)
    return [names[i] + ("-L" if rng.random() < 0.5 else "-R") for i in rng.integers(0, len(names), n)]
