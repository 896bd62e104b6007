"""``EpochsDataset``: stimulus-locked trials with image ids, splits and subjects, plus honest splitting.

The rules that keep evaluation honest live here, so every loader gets them:

- a test image never appears among training trials (refused at construction, naming the images);
- validation is carved from the training IMAGES (all trials of an image go to the same side), seeded;
- empty splits are refused with a message saying what the data holds;
- the test split can be averaged over repetitions per (subject, image), as the THINGS benchmarks do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SPLITS = ("train", "test")


class DatasetError(ValueError):
    """Data that cannot make a valid dataset (shapes, splits, ids); the message says what to do."""


class DataLeakError(DatasetError):
    """Test images would be used for training."""


@dataclass
class EpochsDataset:
    """Trials × channels × times at the model rate, with what was shown on each trial.

    Attributes
    ----------
    X : float32 array, shape (n_trials, n_channels, n_times)
        Preprocessed (causal chain), baseline-corrected epochs.
    image_ids : list of str
        The image shown on each trial.
    splits : array of str, shape (n_trials,)
        ``"train"`` or ``"test"``, from the stimulus marker.
    subject_ids : int array, shape (n_trials,)
    ch_names : list of str
    sfreq : float
        Model rate (Hz).
    tmin : float
        Time of the first sample relative to onset (s).
    space : str | None
        Embedding space of the targets (the gallery's).
    gallery : Gallery | None
        Where :meth:`embeddings_for` looks up targets.
    preprocessing, scaler
        The ``PreprocessingConfig`` and fitted ``RobustScaler`` that made ``X`` (they go in the checkpoint).
    positions : array (n_channels, 2) | None
        2-D sensor positions in [0, 1].
    modality : "meg" | "eeg" | None
    n_repetitions : int array, shape (n_trials,)
        How many trials each row averages (1 for single trials).
    info : dict
        Provenance (source files, dropped windows, ...), YAML/JSON-safe.
    """

    X: np.ndarray
    image_ids: list[str]
    splits: np.ndarray
    subject_ids: np.ndarray
    ch_names: list[str]
    sfreq: float
    tmin: float
    space: str | None = None
    gallery: Any = None
    preprocessing: Any = None
    scaler: Any = None
    positions: np.ndarray | None = None
    modality: str | None = None
    n_repetitions: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.image_ids = [str(i) for i in self.image_ids]
        self.splits = np.asarray(self.splits, dtype="<U5").reshape(-1)
        self.subject_ids = np.asarray(self.subject_ids, dtype=np.int64).reshape(-1)
        self.ch_names = [str(c) for c in self.ch_names]
        n = len(self.X)
        if self.n_repetitions is None:
            self.n_repetitions = np.ones(n, dtype=np.int64)
        self.n_repetitions = np.asarray(self.n_repetitions, dtype=np.int64).reshape(-1)
        if self.X.ndim != 3:
            raise DatasetError(f"X must be (n_trials, n_channels, n_times), got shape {self.X.shape}")
        for name in ("image_ids", "splits", "subject_ids", "n_repetitions"):
            if len(getattr(self, name)) != n:
                raise DatasetError(f"{name} has {len(getattr(self, name))} entries for {n} trials")
        if self.X.shape[1] != len(self.ch_names):
            raise DatasetError(f"X has {self.X.shape[1]} channels but ch_names lists {len(self.ch_names)}")
        bad = sorted(set(self.splits.tolist()) - set(SPLITS))
        if bad:
            raise DatasetError(f"unknown split(s) {bad}; every trial must be one of {SPLITS}")
        if not np.isfinite(self.X).all():
            raise DatasetError("X contains NaN or Inf; drop those trials before building the dataset")
        if self.positions is not None:
            self.positions = np.asarray(self.positions, dtype=np.float64)
            if self.positions.shape != (len(self.ch_names), 2):
                raise DatasetError(f"positions must be ({len(self.ch_names)}, 2), got {self.positions.shape}")
        if self.gallery is not None and self.space is not None:
            self.gallery.check_space(self.space, what="dataset's gallery")
        if self.gallery is not None and self.space is None:
            self.space = self.gallery.space
        self.check_no_leak()

    # --------------------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        counts = {s: int((self.splits == s).sum()) for s in SPLITS}
        return (
            f"EpochsDataset({len(self)} trials {counts}, {self.n_channels} ch × {self.n_times} samples at "
            f"{self.sfreq:g} Hz, tmin={self.tmin:g}, subjects={sorted(set(self.subject_ids.tolist()))}, "
            f"space={self.space!r})"
        )

    @property
    def n_channels(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_times(self) -> int:
        return int(self.X.shape[2])

    @property
    def times(self) -> np.ndarray:
        return self.tmin + np.arange(self.n_times) / self.sfreq

    @property
    def tmax(self) -> float:
        return self.tmin + self.n_times / self.sfreq

    def subset(
        self, rows: np.ndarray | Sequence[int] | Sequence[bool], name: str | None = None
    ) -> EpochsDataset:
        """The trials selected by a boolean mask or index array (metadata shared)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise DatasetError(f"mask must have {len(self)} entries, got {rows.shape}")
            rows = np.flatnonzero(rows)
        info = dict(self.info, subset=name) if name else dict(self.info)
        return replace(
            self,
            X=self.X[rows],
            image_ids=[self.image_ids[i] for i in rows],
            splits=self.splits[rows],
            subject_ids=self.subject_ids[rows],
            n_repetitions=self.n_repetitions[rows],
            info=info,
        )

    # ----------------------------------------------------------------------------------------- targets
    def embeddings_for(self, image_ids: Sequence[str] | None = None) -> np.ndarray:
        """Target embeddings ``(n, D)`` float32 from the gallery (all trials when ``image_ids`` is None)."""
        if self.gallery is None:
            raise DatasetError(
                "this dataset has no gallery, so it has no target embeddings; load it with gallery=DIR "
                "(a folder made by `brainstream gallery build` in the space you train for)"
            )
        return self.gallery.embeddings_for(self.image_ids if image_ids is None else list(image_ids))

    # ------------------------------------------------------------------------------------------ splits
    def check_no_leak(self) -> None:
        """Refuse a dataset where an image is both a training and a test image."""
        train = {i for i, s in zip(self.image_ids, self.splits, strict=True) if s == "train"}
        test = {i for i, s in zip(self.image_ids, self.splits, strict=True) if s == "test"}
        leaked = sorted(train & test)
        if leaked:
            raise DataLeakError(
                f"{len(leaked)} test image(s) also appear in training trials, e.g. {leaked[:5]}; a zero-shot "
                "test needs them removed from training (drop those training trials or relabel the images)"
            )

    def split(self, name: str) -> EpochsDataset:
        """All trials of split ``name``; refuses an empty split."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {SPLITS}")
        mask = self.splits == name
        if not mask.any():
            counts = {s: int((self.splits == s).sum()) for s in SPLITS}
            raise DatasetError(
                f"the {name!r} split is empty (trials per split: {counts}); the recording's markers must "
                f"include '{name}/<image_id>' events"
            )
        return self.subset(mask, name=name)

    def train(self) -> EpochsDataset:
        return self.split("train")

    def test(self, average: bool = True) -> EpochsDataset:
        """The test trials, by default averaged over repetitions per (subject, image)."""
        test = self.split("test")
        return test.average_repetitions() if average else test

    def train_val_split(
        self, val_fraction: float = 0.1, seed: int = 0
    ) -> tuple[EpochsDataset, EpochsDataset]:
        """Split the TRAINING trials into train and validation by image (never by trial), seeded.

        The validation images are a random ``val_fraction`` of the distinct training images (at least
        one); every trial of a validation image goes to validation, so validation retrieval is zero-shot
        like the test. Test trials are in neither part.
        """
        if not 0.0 < val_fraction < 1.0:
            raise DatasetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        train = self.split("train")
        images = np.array(sorted(set(train.image_ids)))
        if len(images) < 2:
            raise DatasetError(
                f"need at least 2 distinct training images to carve a validation set, got {len(images)}"
            )
        n_val = min(len(images) - 1, max(1, int(round(val_fraction * len(images)))))
        rng = np.random.default_rng(seed)
        val_images = set(rng.choice(images, size=n_val, replace=False).tolist())
        is_val = np.array([i in val_images for i in train.image_ids])
        return train.subset(~is_val, name="train"), train.subset(is_val, name="val")

    def average_repetitions(self) -> EpochsDataset:
        """One row per (subject, split, image): the mean of its trials; ``n_repetitions`` counts them."""
        keys = [
            f"{s}\x00{p}\x00{i}"
            for s, p, i in zip(self.subject_ids, self.splits, self.image_ids, strict=True)
        ]
        uniq, first, inverse = np.unique(np.asarray(keys), return_index=True, return_inverse=True)
        order = np.argsort(first)  # keep first-appearance order
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        inverse = rank[inverse]
        weights = self.n_repetitions.astype(np.float64)
        sums = np.zeros((len(uniq), *self.X.shape[1:]), dtype=np.float64)
        np.add.at(sums, inverse, self.X * weights[:, None, None])
        counts = np.zeros(len(uniq))
        np.add.at(counts, inverse, weights)
        rows = first[order]
        return replace(
            self,
            X=(sums / counts[:, None, None]).astype(np.float32),
            image_ids=[self.image_ids[i] for i in rows],
            splits=self.splits[rows],
            subject_ids=self.subject_ids[rows],
            n_repetitions=counts.astype(np.int64),
            info=dict(self.info, averaged=True),
        )

    # -------------------------------------------------------------------------------------------- misc
    @classmethod
    def concatenate(cls, parts: Sequence[EpochsDataset]) -> EpochsDataset:
        """Stack datasets (e.g. subjects) with the same channels, rate, window and space."""
        if not parts:
            raise DatasetError("nothing to concatenate: no datasets given")
        first = parts[0]
        for p in parts[1:]:
            if p.ch_names != first.ch_names:
                raise DatasetError("datasets have different channels; pick a common channel set first")
            if (p.sfreq, p.tmin, p.n_times, p.space) != (first.sfreq, first.tmin, first.n_times, first.space):
                raise DatasetError(
                    f"datasets differ in rate/window/space: {p.sfreq} Hz, tmin {p.tmin}, {p.n_times} "
                    f"samples, {p.space} vs {first.sfreq} Hz, tmin {first.tmin}, {first.n_times} samples, "
                    f"{first.space}"
                )
        return replace(
            first,
            X=np.concatenate([p.X for p in parts]),
            image_ids=[i for p in parts for i in p.image_ids],
            splits=np.concatenate([p.splits for p in parts]),
            subject_ids=np.concatenate([p.subject_ids for p in parts]),
            n_repetitions=np.concatenate([p.n_repetitions for p in parts]),
            info={"parts": [p.info for p in parts]},
        )

    def summary(self) -> dict[str, Any]:
        """Counts and shapes, JSON/YAML-safe (what a checkpoint records about its training data)."""
        per_split = {}
        for s in SPLITS:
            mask = self.splits == s
            per_split[s] = {
                "trials": int(mask.sum()),
                "images": len({self.image_ids[i] for i in np.flatnonzero(mask)}),
            }
        return {
            "n_trials": len(self),
            "splits": per_split,
            "subjects": sorted({int(s) for s in self.subject_ids}),
            "n_channels": self.n_channels,
            "n_times": self.n_times,
            "sfreq": float(self.sfreq),
            "tmin": float(self.tmin),
            "space": self.space,
            "modality": self.modality,
            "source": self.info.get("source"),
        }
