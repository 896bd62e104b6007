"""The calibration protocol (``configs/calibration/*.yaml``) and its trial schedule.

An RSVP session like THINGS, shortened for one sitting: training images shown once, a test subset shown
``test_repeats`` times (the held-out evaluation), a few attention catch trials, breaks every
``block_trials`` trials. The schedule is a pure function of the config, the gallery's image ids and the
seed, so an interrupted calibration resumes exactly where it stopped (:mod:`calibration.session`).

The same file also carries what calibration needs downstream: the virtual subject used for closed-loop
runs, the preprocessing chain and window, the few-shot adaptation recipe, the pretraining recipe of the
multi-subject encoder and the size of the reference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from brainstream.models.config_base import StrictModel, load_config
from brainstream.models.events import format_stimulus_marker
from brainstream.models.preprocessing import PreprocessingConfig

__all__ = [
    "AdaptationConfig",
    "DisplayConfig",
    "PretrainedConfig",
    "ProtocolConfig",
    "Schedule",
    "ScheduledTrial",
    "build_schedule",
    "load_protocol",
]


class DisplayConfig(StrictModel):
    """What the presenter window looks like."""

    image_px: int = Field(default=256, gt=8, description="side of the shown image (thumbnails are scaled)")
    background: int = Field(default=128, ge=0, le=255, description="grey level of the screen")
    fixation_px: int = Field(default=24, gt=2, description="size of the fixation cross")
    photodiode_px: int = Field(default=48, ge=0, description="side of the photodiode patch (0: none)")
    photodiode_corner: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-left"
    fullscreen: bool = False
    width: int = Field(default=800, gt=100, description="window width when not full screen")
    height: int = Field(default=600, gt=100, description="window height when not full screen")


class VirtualSubjectConfig(StrictModel):
    """The simulated subject of closed-loop runs (``--virtual-subject SEED``) and of pretraining."""

    profile: str = Field(default="eeg64_1000hz", description="device profile under configs/devices")
    snr: float | None = Field(default=None, ge=0, description="None: the simulator's tuned default")
    shared_fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="share of the population code in each subject's feature tuning (0: subjects share "
        "nothing, simulator v1); None: the simulator's default (realtime.simulation.responses)",
    )

    def simulator_kwargs(self) -> dict[str, float]:
        """The settings to pass to ``VirtualSubject`` (those left at None take the simulator's defaults)."""
        pairs = (("snr", self.snr), ("shared_fraction", self.shared_fraction))
        return {k: v for k, v in pairs if v is not None}


class WindowConfig(StrictModel):
    tmin: float = -0.1
    tmax: float = 1.0

    @model_validator(mode="after")
    def _order(self) -> WindowConfig:
        if self.tmax <= self.tmin:
            raise ValueError(f"window tmax ({self.tmax}) must be after tmin ({self.tmin})")
        return self


class AdaptationConfig(StrictModel):
    """Few-shot adaptation of the pretrained encoder to the new subject (selection on validation)."""

    modes: list[Literal["subject_layer", "light", "anchor"]] = Field(
        default_factory=lambda: ["subject_layer", "light"],
        min_length=1,
        description="subject_layer: only the new subject layer trains (trunk frozen); light: the subject "
        "layer and read-out heads at lr, the shared trunk at lr × each of trunk_lr_factors; anchor: no "
        "training, the read-out's last layer is a ridge map from the shared trunk's features (population-"
        "mean subject layer) to the embeddings of the subject's training images (anchor-based alignment)",
    )
    lr: float = Field(default=3e-3, gt=0)
    trunk_lr_factors: list[float] = Field(
        default_factory=lambda: [0.1, 0.3],
        min_length=1,
        description="light mode: trunk learning-rate factors tried (one candidate each, chosen on val)",
    )
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=64, gt=1)
    max_epochs: int = Field(default=60, gt=0)
    patience: int = Field(default=10, gt=0)
    val_fraction: float = Field(default=0.15, gt=0, lt=1, description="share of training IMAGES held out")
    learning_curve: list[int] = Field(
        default_factory=lambda: [50, 100, 200],
        description="numbers of calibration training trials for the learning curve (the full set is added)",
    )
    time_shift: int = Field(
        default=0, ge=0, description="augmentation: shift each training window by up to ± this many samples"
    )
    noise_std: float = Field(
        default=0.0, ge=0, description="augmentation: Gaussian noise of this std (robust-scaled units)"
    )
    head_init: Literal["pretrained", "ridge"] = Field(
        default="pretrained",
        description="the CLIP read-out's last layer starts as the pretrained one or as a ridge fit of the "
        "targets on the trunk's features for this subject (a new person's tuning differs from everyone's)",
    )
    soup_folds: int = Field(
        default=1,
        ge=1,
        description="1: the adapted model is the one trained on the carved training images; K > 1: the "
        "recipe chosen on validation is trained K times, each early-stopped on its own 1/K of the training "
        "images (K-fold), and the K models' weights are averaged (a model soup): every image trains it",
    )
    seed: int = 0


class PretrainedConfig(StrictModel):
    """The multi-subject encoder calibration starts from: trained on simulated subjects, cached."""

    seeds: list[int] = Field(
        default_factory=lambda: [101, 102, 103, 104], min_length=1, description="simulated subject seeds"
    )
    n_train_images: int = Field(default=800, gt=1, description="training images per pretraining subject")
    model: dict[str, Any] = Field(
        default_factory=lambda: {
            "name": "brain_module",
            "spatial_channels": 32,
            "fourier_freqs": 8,
            "hidden": 32,
            "depth": 2,
            "out_channels": 64,
            "dropout": 0.0,
        },
        description="architecture without the data-given sizes (models.encoders)",
    )
    lr: float = Field(default=2e-3, gt=0)
    batch_size: int = Field(default=128, gt=1)
    max_epochs: int = Field(default=40, gt=0)
    patience: int = Field(default=8, gt=0)
    augment: dict[str, Any] = Field(
        default_factory=dict,
        description="training-time augmentation of the pretraining (models.training.config.AugmentConfig: "
        "time_shift, noise_std, sign_flip); empty: none",
    )


class ProtocolConfig(StrictModel):
    """A calibration protocol (``configs/calibration/NAME.yaml``)."""

    name: str = "rsvp"
    gallery: str | None = Field(default=None, description="stimulus gallery folder (None: the demo gallery)")
    n_train_images: int = Field(default=400, ge=1, description="training images, each shown once")
    n_test_images: int = Field(default=50, ge=2, description="held-out test images")
    test_repeats: int = Field(default=4, ge=1, description="presentations of each test image")
    n_catch: int = Field(default=20, ge=0, description="attention catch trials (press a key)")
    image_s: float = Field(default=0.5, gt=0, description="image on screen (s)")
    isi_s: float = Field(default=0.5, ge=0, description="mean blank (fixation only) between images (s)")
    isi_jitter_s: float = Field(default=0.1, ge=0, description="ISI drawn uniformly in isi ± jitter (s)")
    fixation_s: float = Field(default=1.0, ge=0, description="fixation cross alone before each block (s)")
    block_trials: int = Field(default=150, gt=0, description="trials between breaks")
    break_s: float = Field(default=10.0, ge=0, description="break length; a key press resumes earlier")
    tail_s: float = Field(default=1.5, ge=0, description="recording kept running after the last image (s)")
    seed: int = Field(default=0, description="seed of image choice, order, catch placement and jitter")
    display: DisplayConfig = Field(default_factory=DisplayConfig)
    subject: VirtualSubjectConfig = Field(default_factory=VirtualSubjectConfig)
    preprocessing: PreprocessingConfig = Field(
        default_factory=lambda: PreprocessingConfig(
            l_freq=0.5,
            h_freq=40.0,
            notch_freqs=[50.0],
            sfreq_out=100.0,
            robust_scale=True,
            clamp=20.0,
            baseline=(None, 0.0),
        )  # fmt: skip
    )
    window: WindowConfig = Field(default_factory=WindowConfig)
    n_way: int = Field(default=50, ge=2, description="candidates per retrieval trial (capped by test set)")
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    pretrained: PretrainedConfig = Field(default_factory=PretrainedConfig)
    reference_factor: int = Field(
        default=5, ge=1, description="the reference gets this × the training trials"
    )
    reference_from_scratch: bool = Field(
        default=False, description="also train the reference architecture from scratch (slower)"
    )

    @model_validator(mode="after")
    def _check(self) -> ProtocolConfig:
        if self.isi_jitter_s > self.isi_s:
            raise ValueError(f"isi_jitter_s ({self.isi_jitter_s}) must not exceed isi_s ({self.isi_s})")
        return self

    @property
    def n_trials(self) -> int:
        """Stimulus trials that train or test a model (catch trials excluded)."""
        return self.n_train_images + self.n_test_images * self.test_repeats

    def check_gallery(self, n_images: int) -> None:
        need = self.n_train_images + self.n_test_images + min(self.n_catch, 1)
        if need > n_images:
            raise ValueError(
                f"protocol {self.name!r} needs {need} distinct images ({self.n_train_images} train + "
                f"{self.n_test_images} test{' + catch' if self.n_catch else ''}) but the gallery has "
                f"{n_images}; lower the counts or use a bigger gallery"
            )

    def digest(self) -> str:
        """Short hash of the protocol (a changed protocol never resumes an old calibration)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_protocol(path: str | Path) -> ProtocolConfig:
    """Load ``configs/calibration/NAME.yaml`` (by path or name); errors name the file and the key."""
    return load_config(path, ProtocolConfig, kind="calibration")


# ------------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class ScheduledTrial:
    """One image presentation. ``isi_s`` is the blank that FOLLOWS it (before the next image)."""

    index: int
    split: str  # train | test | catch
    image_id: str
    block: int
    isi_s: float

    @property
    def marker(self) -> str:
        return format_stimulus_marker(self.split, self.image_id)


@dataclass(frozen=True)
class Schedule:
    """The whole session in order, plus the image sets (test images are disjoint from training ones)."""

    trials: tuple[ScheduledTrial, ...]
    train_images: tuple[str, ...]
    test_images: tuple[str, ...]
    catch_images: tuple[str, ...]
    config_digest: str

    def __len__(self) -> int:
        return len(self.trials)

    @property
    def n_blocks(self) -> int:
        return 1 + max((t.block for t in self.trials), default=0)

    def duration_s(self, config: ProtocolConfig, start: int = 0) -> float:
        """Nominal seconds (real time) from trial ``start`` to the end, breaks and fixation included."""
        rest = self.trials[start:]
        if not rest:
            return 0.0
        blocks = {t.block for t in rest}
        n_breaks = len(blocks) - 1
        return (
            sum(config.image_s + t.isi_s for t in rest)
            + len(blocks) * config.fixation_s
            + n_breaks * config.break_s
            + config.tail_s
        )

    def markers(self) -> list[str]:
        return [t.marker for t in self.trials]


def split_images(config: ProtocolConfig, image_ids: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(test, train, catch) image ids: a seeded permutation of the gallery, cut in that order.

    Test images come first so that every protocol with the same seed and gallery shares its test set, and
    pretraining can leave them out.
    """
    config.check_gallery(len(image_ids))
    perm = np.random.default_rng([config.seed, 17]).permutation(len(image_ids))
    ordered = [image_ids[i] for i in perm]
    n_te, n_tr = config.n_test_images, config.n_train_images
    test, train = ordered[:n_te], ordered[n_te : n_te + n_tr]
    rest = ordered[n_te + n_tr :]
    n_catch_images = min(config.n_catch, len(rest))
    return test, train, rest[:n_catch_images]


def build_schedule(config: ProtocolConfig, image_ids: list[str]) -> Schedule:
    """The session's trials in presentation order, deterministic from ``config.seed`` and the gallery.

    Training images appear once, test images ``test_repeats`` times, catch trials are spread at random
    (never first in a block, so a block starts with a real image) and reuse catch images cyclically.
    """
    image_ids = [str(i) for i in image_ids]
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("gallery image ids must be unique")
    test, train, catch = split_images(config, image_ids)
    rng = np.random.default_rng([config.seed, 23])
    items = [("train", i) for i in train] + [("test", i) for i in test for _ in range(config.test_repeats)]
    items = [items[k] for k in rng.permutation(len(items))]
    # catch trials: insert at random positions (1..n) so none is the very first trial
    if config.n_catch and catch:
        slots = np.sort(rng.integers(1, len(items) + 1, size=config.n_catch))
        for j, pos in enumerate(slots[::-1]):
            items.insert(int(pos), ("catch", catch[(config.n_catch - 1 - j) % len(catch)]))
    jitter = rng.uniform(-config.isi_jitter_s, config.isi_jitter_s, size=len(items))
    trials = tuple(
        ScheduledTrial(
            index=k,
            split=split,
            image_id=image_id,
            block=k // config.block_trials,
            isi_s=float(config.isi_s + jitter[k]),
        )
        for k, (split, image_id) in enumerate(items)
    )
    return Schedule(trials, tuple(train), tuple(test), tuple(catch), config.digest())
