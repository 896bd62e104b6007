"""The arrays a trainer needs, taken from an ``EpochsDataset`` (or built directly in tests / notebooks).

:class:`EncodingData` holds one row per trial: the window, its image id, its split, its subject and its
target embedding. Splitting helpers work on IMAGES, never on trials, so the repetitions of one image stay on
one side of every split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """The training / evaluation data cannot be used as given (empty split, NaNs, leakage, mismatch)."""


@dataclass
class EncodingData:
    """Trials for training or evaluating an encoder.

    Attributes
    ----------
    X : float32 array, shape (n_trials, n_channels, n_times)
    image_ids : array of str, shape (n_trials,)
    splits : array of str, shape (n_trials,) — "train" or "test"
    subjects : int array, shape (n_trials,) — index into ``subject_names``
    subject_names : list of str
    targets : float32 array, shape (n_trials, D) — the image embedding of each trial
    ch_names, sfreq (model rate), tmin (window start, s), space (embedding space id)
    positions : (n_channels, 2) sensor positions in [0, 1], or None
    """

    X: np.ndarray
    image_ids: np.ndarray
    splits: np.ndarray
    subjects: np.ndarray
    subject_names: list[str]
    targets: np.ndarray
    ch_names: list[str]
    sfreq: float
    tmin: float
    space: str
    positions: np.ndarray | None = None
    modality: str | None = None
    preprocessing: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.image_ids = np.asarray(self.image_ids, dtype=str)
        self.splits = np.asarray(self.splits, dtype=str)
        self.subjects = np.asarray(self.subjects, dtype=np.int64)
        self.targets = np.ascontiguousarray(self.targets, dtype=np.float32)
        n = len(self.X)
        if self.X.ndim != 3:
            raise DataError(f"X must be (n_trials, n_channels, n_times), got shape {self.X.shape}")
        for name in ("image_ids", "splits", "subjects", "targets"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{name} has {len(getattr(self, name))} rows for {n} trials")
        if self.X.shape[1] != len(self.ch_names):
            raise DataError(f"X has {self.X.shape[1]} channels but ch_names lists {len(self.ch_names)}")
        if n and (self.subjects.min() < 0 or self.subjects.max() >= len(self.subject_names)):
            raise DataError(f"subject indices must lie in [0, {len(self.subject_names)})")
        if self.positions is not None:
            self.positions = np.asarray(self.positions, dtype=np.float64)
            if self.positions.shape != (len(self.ch_names), 2):
                raise DataError(f"positions must be ({len(self.ch_names)}, 2), got {self.positions.shape}")

    @property
    def n_times(self) -> int:
        return int(self.X.shape[2])

    @property
    def dim(self) -> int:
        return int(self.targets.shape[1])

    def subset(self, mask: np.ndarray) -> EncodingData:
        mask = np.asarray(mask)
        return replace(
            self,
            X=self.X[mask],
            image_ids=self.image_ids[mask],
            splits=self.splits[mask],
            subjects=self.subjects[mask],
            targets=self.targets[mask],
        )

    def split(self, name: str) -> EncodingData:
        return self.subset(self.splits == name)

    def check(self, need_test: bool = True) -> None:
        """Refuse NaNs, empty splits and test images that also appear in training.

        With ``need_test=False`` the test trials are not even read (a final fit never touches them).
        """
        used = np.isin(self.splits, ["train", "test"] if need_test else ["train"])
        finite = np.isfinite(self.X).reshape(len(self.X), -1).all(axis=1)
        if not finite[used].all():
            bad = np.nonzero(used & ~finite)[0]
            raise DataError(
                f"{len(bad)} trials contain NaN/Inf (first: {bad[:5].tolist()}); interpolate bad channels or "
                "drop those trials before training"
            )
        if not np.isfinite(self.targets).all():
            raise DataError("target embeddings contain NaN/Inf; rebuild the gallery")
        n_train = int((self.splits == "train").sum())
        n_test = int((self.splits == "test").sum())
        if n_train == 0:
            raise DataError("the training split is empty: the data has no trials marked 'train'")
        if need_test and n_test == 0:
            raise DataError("the test split is empty: the data has no trials marked 'test'")
        leaked = sorted(
            set(self.image_ids[self.splits == "train"]) & set(self.image_ids[self.splits == "test"])
        )
        if leaked:
            raise DataError(
                f"{len(leaked)} test images also appear in training (e.g. {leaked[:5]}); a zero-shot test "
                "needs disjoint images: remove them from training (THINGS: drop the 200 test concepts)"
            )


def carve_validation(data: EncodingData, val_fraction: float, seed: int) -> tuple[EncodingData, EncodingData]:
    """Split the TRAINING trials into (train, validation) by image; the test split is not touched."""
    train = data.split("train")
    images = np.unique(train.image_ids)
    n_val = int(round(val_fraction * len(images)))
    if n_val < 2 or n_val >= len(images):
        raise DataError(
            f"cannot hold out {val_fraction:.0%} of {len(images)} training images for validation "
            f"({n_val} images); use more training images or another selection.val_fraction"
        )
    val_images = set(np.random.default_rng(seed).choice(images, size=n_val, replace=False).tolist())
    is_val = np.array([i in val_images for i in train.image_ids])
    return train.subset(~is_val), train.subset(is_val)


def candidates_for(data: EncodingData) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Unique images of ``data`` as retrieval candidates: (embeddings (N, D), true row per trial, ids)."""
    ids, first, inverse = np.unique(data.image_ids, return_index=True, return_inverse=True)
    return data.targets[first], inverse.astype(np.int64), ids.tolist()


def average_repetitions(data: EncodingData) -> EncodingData:
    """One trial per (subject, image): the mean of its repetitions (signal averaging, as in THINGS tests)."""
    keys = np.array([f"{s}\x00{i}" for s, i in zip(data.subjects, data.image_ids, strict=True)])
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    X = np.zeros((len(uniq), *data.X.shape[1:]), dtype=np.float64)
    np.add.at(X, inverse, data.X)
    X /= np.bincount(inverse, minlength=len(uniq))[:, None, None]
    out = data.subset(first)
    out.X = X.astype(np.float32)
    return out


def from_epochs_dataset(ds: Any) -> EncodingData:
    """Adapt a ``models.datasets.EpochsDataset`` (X, image_ids, splits, subject_ids, embeddings_for, ...)."""
    keep = np.isin(np.asarray(ds.splits), ["train", "test"])  # catch trials have no image target
    if not keep.all():
        ds = ds.subset(keep) if hasattr(ds, "subset") else ds
    image_ids = [str(i) for i in ds.image_ids]
    subject_ids = np.asarray(ds.subject_ids)
    names = [str(s) for s in np.unique(subject_ids)]
    index = {s: k for k, s in enumerate(names)}
    positions = getattr(ds, "positions", None)
    scaler = getattr(ds, "scaler", None)
    pre = getattr(ds, "preprocessing", None)
    return EncodingData(
        X=ds.X,
        image_ids=np.asarray(image_ids),
        splits=np.asarray([str(s) for s in ds.splits]),
        subjects=np.array([index[str(s)] for s in subject_ids], dtype=np.int64),
        subject_names=names,
        targets=np.asarray(ds.embeddings_for(image_ids), dtype=np.float32),
        ch_names=list(ds.ch_names),
        sfreq=float(ds.sfreq),
        tmin=float(ds.tmin),
        space=str(ds.space),
        positions=None if positions is None else np.asarray(positions),
        modality=getattr(ds, "modality", None),
        summary=ds.summary() if callable(getattr(ds, "summary", None)) else {},
        preprocessing=pre.model_dump(mode="json") if hasattr(pre, "model_dump") else pre,
        scaler=scaler.to_dict() if hasattr(scaler, "to_dict") else scaler,
    )


def concatenate(parts: list[EncodingData]) -> EncodingData:
    """Stack several recordings (e.g. one per subject) that share channels, rate, window and space."""
    if not parts:
        raise DataError("no data to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if p.ch_names != first.ch_names:
            raise DataError("recordings have different channels; pick a common channel set first")
        if p.sfreq != first.sfreq or p.X.shape[2] != first.X.shape[2] or p.space != first.space:
            raise DataError(
                f"recordings differ in model rate/window/space: {p.sfreq} Hz × {p.X.shape[2]} in {p.space} "
                f"vs {first.sfreq} Hz × {first.X.shape[2]} in {first.space}"
            )
    names: list[str] = []
    for p in parts:
        names += [n for n in p.subject_names if n not in names]
    subjects = np.concatenate([[names.index(p.subject_names[s]) for s in p.subjects] for p in parts])
    return replace(
        first,
        X=np.concatenate([p.X for p in parts]),
        image_ids=np.concatenate([p.image_ids for p in parts]),
        splits=np.concatenate([p.splits for p in parts]),
        subjects=subjects.astype(np.int64),
        subject_names=names,
        targets=np.concatenate([p.targets for p in parts]),
        summary=first.summary if len(parts) == 1 else {"parts": [p.summary for p in parts]},
    )


def save_encoding_data(path: str | Path, data: EncodingData) -> Path:
    """Write preprocessed trials to one ``.npz`` (plain arrays + a JSON header; loads without pickle)."""
    header = {
        "subject_names": data.subject_names,
        "ch_names": data.ch_names,
        "sfreq": data.sfreq,
        "tmin": data.tmin,
        "space": data.space,
        "modality": data.modality,
        "preprocessing": data.preprocessing,
        "scaler": data.scaler,
        "summary": data.summary,
    }
    arrays = {
        "X": data.X,
        "image_ids": data.image_ids.astype(str),
        "splits": data.splits.astype(str),
        "subjects": data.subjects,
        "targets": data.targets,
        "header": np.array(json.dumps(header, default=float)),
    }
    if data.positions is not None:
        arrays["positions"] = data.positions
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_encoding_data(path: str | Path) -> EncodingData:
    """Read a file written by :func:`save_encoding_data` (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"trials file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            return EncodingData(
                X=z["X"],
                image_ids=z["image_ids"],
                splits=z["splits"],
                subjects=z["subjects"],
                targets=z["targets"],
                positions=z["positions"] if "positions" in z.files else None,
                **header,
            )
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a trials file written by save_encoding_data ({exc})") from None
