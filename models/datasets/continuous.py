"""Continuous recordings → ``EpochsDataset`` through the ONLINE preprocessing chain (train/serve parity).

Every loader of continuous data (simulated FIF, THINGS-MEG, XDF) ends here:

1. stimulus events are parsed from marker strings (``"<split>/<image_id>"``, ``models.events``);
2. if robust scaling is on and no scaler is given, a first pass runs the chain without scaling and fits
   the per-channel median / IQR on samples inside TRAINING windows only (never test ones);
3. the second pass runs :func:`models.preprocessing.preprocess_recording` with that scaler — the same
   ``Preprocessor`` object the live decoder runs — and :func:`models.windowing.cut_epochs` cuts the
   windows exactly as the online windower does.

Recordings are given as zero-argument callables so that a multi-run dataset is read one run at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainstream.models.datasets.epochs import DatasetError, EpochsDataset
from brainstream.models.events import parse_stimulus_marker
from brainstream.models.preprocessing import PreprocessingConfig, RobustScaler, preprocess_recording
from brainstream.models.windowing import WindowSpec, cut_epochs

logger = logging.getLogger(__name__)

MAX_SCALER_SAMPLES = 200_000  # per channel: medians/IQRs are stable long before this


@dataclass
class ContinuousRecording:
    """One continuous recording with its stimulus events.

    ``timestamps`` and event ``onsets`` are on the same clock (LSL seconds, or seconds from the file start).
    ``markers`` are ``"<split>/<image_id>"`` strings; others (and ``catch``) are ignored.
    """

    data: np.ndarray  # (n_channels, n_times)
    timestamps: np.ndarray  # (n_times,)
    ch_names: list[str]
    sfreq: float
    onsets: np.ndarray  # (n_events,)
    markers: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        self.onsets = np.asarray(self.onsets, dtype=np.float64).reshape(-1)
        self.markers = [str(m) for m in self.markers]
        if self.data.ndim != 2 or self.data.shape[0] != len(self.ch_names):
            raise DatasetError(
                f"recording data must be ({len(self.ch_names)} channels, n_times), got {self.data.shape}"
            )
        if self.timestamps.shape != (self.data.shape[1],):
            raise DatasetError(f"{self.timestamps.size} timestamps for {self.data.shape[1]} samples")
        if len(self.markers) != self.onsets.size:
            raise DatasetError(f"{len(self.markers)} markers for {self.onsets.size} onsets")

    def stimulus_events(self) -> tuple[np.ndarray, list[str], list[str]]:
        """``(onsets, splits, image_ids)`` of train/test stimulus markers, in time order."""
        rows = []
        for onset, marker in zip(self.onsets, self.markers, strict=True):
            event = parse_stimulus_marker(marker)
            if event is not None and event.split in ("train", "test"):
                rows.append((float(onset), event.split, event.image_id))
        rows.sort(key=lambda r: r[0])
        return (
            np.array([r[0] for r in rows], dtype=np.float64),
            [r[1] for r in rows],
            [r[2] for r in rows],
        )


RecordingSource = ContinuousRecording | Callable[[], ContinuousRecording]


def _get(source: RecordingSource) -> ContinuousRecording:
    return source() if callable(source) else source


def _window_mask(out_ts: np.ndarray, onsets: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """Output samples that fall inside any ``[onset + tmin, onset + tmax)`` window."""
    starts = np.searchsorted(out_ts, onsets + spec.tmin)
    stops = np.searchsorted(out_ts, onsets + spec.tmax)
    delta = np.zeros(out_ts.size + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, stops, -1)
    return np.cumsum(delta[:-1]) > 0


def _check_in_gallery(gallery: Any, image_ids: Sequence[str]) -> None:
    if gallery is not None:  # before the expensive filtering: the error lists every unknown id
        gallery.indices_of(sorted(set(image_ids)))


def fit_scaler_on_training_windows(
    sources: Sequence[RecordingSource],
    config: PreprocessingConfig,
    tmin: float,
    tmax: float,
    seed: int = 0,
    progress: bool = False,
    gallery: Any = None,
) -> RobustScaler:
    """First pass: the chain without scaling/clamping; median/IQR over samples in TRAINING windows only."""
    raw_cfg = config.model_copy(update={"robust_scale": False, "clamp": None})
    rng = np.random.default_rng(seed)
    chunks, ch_names = [], None
    for source in sources:
        rec = _get(source)
        if ch_names is not None and rec.ch_names != ch_names:
            raise DatasetError("recordings of one dataset must have the same channels in the same order")
        ch_names = rec.ch_names
        onsets, splits, ids = rec.stimulus_events()
        _check_in_gallery(gallery, ids)
        train_onsets = onsets[np.asarray(splits) == "train"]
        if not train_onsets.size:
            continue
        out, out_ts = preprocess_recording(
            rec.data, rec.timestamps, rec.ch_names, rec.sfreq, raw_cfg, progress=progress
        )
        spec = WindowSpec(tmin, tmax, float(config.sfreq_out or rec.sfreq))
        chunks.append(out[:, _window_mask(out_ts, train_onsets, spec)])
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise DatasetError(
            "no training trials to fit the robust scaler on: the recordings hold no 'train/<id>' events "
            "(pass a fitted scaler, e.g. from a subject profile, or set robust_scale: false)"
        )
    samples = np.concatenate(chunks, axis=1)
    if samples.shape[1] > MAX_SCALER_SAMPLES:  # seeded subsample keeps memory bounded on hour-long data
        samples = samples[:, np.sort(rng.choice(samples.shape[1], MAX_SCALER_SAMPLES, replace=False))]
    return RobustScaler().fit(samples, ch_names=ch_names)


def epochs_from_recordings(
    sources: Sequence[RecordingSource],
    *,
    preprocessing: PreprocessingConfig,
    tmin: float,
    tmax: float,
    subject: int = 0,
    scaler: RobustScaler | None = None,
    gallery: Any = None,
    space: str | None = None,
    positions: np.ndarray | None = None,
    modality: str | None = None,
    info: dict[str, Any] | None = None,
    progress: bool = False,
) -> EpochsDataset:
    """Run the causal chain over each recording and cut stimulus-locked windows.

    Parameters
    ----------
    sources : list of ContinuousRecording or callables returning one
        Runs of ONE subject, same channels.
    preprocessing : PreprocessingConfig
        The chain (its ``baseline`` is applied to each window).
    tmin, tmax : float
        Window around onset (s), half-open ``[tmin, tmax)``.
    subject : int
        Subject id stored on every trial.
    scaler : RobustScaler | None
        When robust scaling is on and this is None, one is fitted on the training windows (first pass).
    gallery : Gallery | None
        Target embeddings; every image id must be in it.
    space, positions, modality, info
        Stored on the dataset.
    progress : bool
        Progress bars.

    Returns
    -------
    EpochsDataset
        Windows that were incomplete (recording edge, gap, NaN) are dropped and counted in ``info``.
    """
    if not sources:
        raise DatasetError("no recordings given")
    if preprocessing.robust_scale and scaler is None:
        scaler = fit_scaler_on_training_windows(
            sources, preprocessing, tmin, tmax, progress=progress, gallery=gallery
        )
    X, ids, splits, dropped, ch_names, sfreq = [], [], [], {}, None, None
    for source in sources:
        rec = _get(source)
        onsets, rec_splits, rec_ids = rec.stimulus_events()
        if not onsets.size:
            logger.warning("recording %s has no train/test stimulus markers", rec.info.get("source", "?"))
            continue
        _check_in_gallery(gallery, rec_ids)
        out, out_ts = preprocess_recording(
            rec.data, rec.timestamps, rec.ch_names, rec.sfreq, preprocessing, scaler, progress=progress
        )
        sfreq = float(preprocessing.sfreq_out or rec.sfreq)
        if ch_names is not None and rec.ch_names != ch_names:
            raise DatasetError(
                f"recording {rec.info.get('source', '?')} has other channels than the previous ones; the "
                "runs of one dataset must share channels (pass ch_names= to pick a common set)"
            )
        ch_names = rec.ch_names
        result = cut_epochs(
            out, out_ts, onsets, WindowSpec(tmin, tmax, sfreq), baseline=preprocessing.baseline
        )
        X.append(result.X)
        ids += [rec_ids[k] for k in result.kept]
        splits += [rec_splits[k] for k in result.kept]
        for status, count in result.counts().items():
            if status != "ok" and count:
                dropped[status] = dropped.get(status, 0) + count
    if not ids:
        raise DatasetError(
            "no complete stimulus windows: the recordings hold no 'train/<id>' or 'test/<id>' markers whose "
            f"window [{tmin}, {tmax}) s lies inside the data"
        )
    if dropped:
        logger.warning("dropped %s incomplete windows: %s", sum(dropped.values()), dropped)
    return EpochsDataset(
        X=np.concatenate(X),
        image_ids=ids,
        splits=np.asarray(splits),
        subject_ids=np.full(len(ids), int(subject), dtype=np.int64),
        ch_names=list(ch_names),
        sfreq=sfreq,
        tmin=float(tmin),
        space=space if space is not None else getattr(gallery, "space", None),
        gallery=gallery,
        preprocessing=preprocessing,
        scaler=scaler,
        positions=positions,
        modality=modality,
        info={**(info or {}), "dropped_windows": dropped},
    )
