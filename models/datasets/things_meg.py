"""THINGS-MEG (OpenNeuro ds004212, BIDS) → ``EpochsDataset``, through the online preprocessing chain.

Layout used (facts from the dataset and its users):

- ``sub-BIGMEG<n>/ses-<NN>/meg/sub-BIGMEG<n>_ses-<NN>_task-main_run-<NN>_meg.ds`` (CTF; read with mne-bids),
  12 sessions × 10 runs per subject, 1200 Hz, 272 axial gradiometers (``MRO11-1609`` is broken: dropped);
- ``sourcedata/sample_attributes_P<n>.csv``: one row per image presentation with ``trial_type``
  (``exp`` = training, ``test``, ``catch``), ``session_nr``, ``run_nr``, ``image_path``
  (``images_meg/<concept>/<concept>_<NN><x>.jpg``), in presentation order;
- ``UPPT001``: the parallel-port trigger, one pulse (value 64) per image, 32 at the end of a run;
  ``UADC016``: the optical sensor (photodiode) on the screen. ``image_on`` in the tables is about 150 ms
  late against these, so onsets come from the trigger (default) or the photodiode, never from ``image_on``.

Zero-shot hygiene: every training image of one of the 200 test concepts is removed (the concepts of the
``test`` rows), so the test set stays unseen. Image ids are file stems (``aardvark_01b``), as
``brainstream gallery build`` names the THINGS images.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.datasets.common import default_preprocessing, positions_for, resolve_gallery
from brainstream.models.datasets.continuous import ContinuousRecording, epochs_from_recordings
from brainstream.models.datasets.epochs import DatasetError, EpochsDataset

logger = logging.getLogger(__name__)

BROKEN_CHANNELS = ("MRO11-1609",)
TRIGGER_CHANNEL = "UPPT001"
PHOTODIODE_PREFIX = "UADC016"
IMAGE_TRIGGER = 64
REQUIRED_COLUMNS = ("trial_type", "session_nr", "run_nr", "image_path")


def _subject_label(subject: str | int) -> tuple[str, int]:
    text = str(subject).removeprefix("sub-").removeprefix("BIGMEG")
    if not text.isdigit():
        raise DatasetError(f"THINGS-MEG subjects are 1-4 (or 'BIGMEG1', 'sub-BIGMEG1'), got {subject!r}")
    return f"BIGMEG{int(text)}", int(text)


def concept_of(image_path: str) -> str:
    """``images_meg/aardvark/aardvark_01b.jpg`` → ``aardvark`` (THINGS names images ``<concept>_<NN><x>``)."""
    stem = Path(image_path).stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def read_attributes(root: Path, number: int) -> list[dict[str, str]]:
    """Rows of ``sourcedata/sample_attributes_P<n>.csv`` (presentation order kept)."""
    path = root / "sourcedata" / f"sample_attributes_P{number}.csv"
    if not path.is_file():
        raise DatasetError(
            f"missing {path}: it names the image of every trial (the BIDS events.tsv does not); download the "
            "dataset's sourcedata folder too"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise DatasetError(f"{path}: expected columns {REQUIRED_COLUMNS}, missing {missing or 'all rows'}")
    return rows


def label_trials(rows: list[dict[str, str]]) -> tuple[list[str | None], set[str], int]:
    """Split of each row (``train``/``test``, None = not used) with test concepts removed from training."""
    test_concepts = {concept_of(r["image_path"]) for r in rows if r["trial_type"] == "test"}
    splits: list[str | None] = []
    removed = 0
    for r in rows:
        kind = r["trial_type"]
        if kind == "test":
            splits.append("test")
        elif kind == "exp" and concept_of(r["image_path"]) in test_concepts:
            splits.append(None)
            removed += 1
        elif kind == "exp":
            splits.append("train")
        else:  # catch trials (and anything unknown) are not images of the set
            splits.append(None)
    return splits, test_concepts, removed


def _find_runs(root: Path, label: str, sessions: Sequence[int] | None, runs: Sequence[int] | None):
    from mne_bids import find_matching_paths

    found = find_matching_paths(
        root, subjects=label, tasks="main", datatypes="meg", suffixes="meg", extensions=[".ds", ".fif"]
    )
    if not found:
        subjects = sorted(p.name for p in root.glob("sub-*"))
        raise DatasetError(f"no MEG runs of sub-{label} under {root} (subjects there: {subjects or 'none'})")
    chosen = []
    for bp in found:
        ses, run = int(bp.session), int(bp.run)
        if (sessions is None or ses in sessions) and (runs is None or run in runs):
            chosen.append((ses, run, bp))
    if not chosen:
        have = sorted({(int(b.session), int(b.run)) for b in found})
        raise DatasetError(f"none of the requested sessions/runs exist; (session, run) found: {have}")
    return sorted(chosen, key=lambda x: (x[0], x[1]))


def photodiode_onsets(signal: np.ndarray, trigger_samples: np.ndarray, sfreq: float, max_lag: float = 0.2):
    """First rising crossing of the photodiode's mid level after each trigger (within ``max_lag`` s).

    Returns sample indices; triggers without a crossing keep the trigger sample shifted by the median lag.
    """
    lo, hi = np.percentile(signal, [5, 95])
    if hi - lo <= 0:
        raise DatasetError("the photodiode channel is flat: use onsets='trigger'")
    above = signal >= lo + 0.5 * (hi - lo)
    rising = np.flatnonzero(~above[:-1] & above[1:]) + 1
    out = np.full(trigger_samples.size, -1, dtype=np.int64)
    for k, t in enumerate(trigger_samples):
        i = np.searchsorted(rising, t - int(0.01 * sfreq))
        if i < rising.size and rising[i] <= t + max_lag * sfreq:
            out[k] = rising[i]
    found = out >= 0
    if not found.any():
        raise DatasetError("no photodiode flash follows the triggers: use onsets='trigger'")
    if not found.all():
        lag = int(np.median(out[found] - trigger_samples[found]))
        logger.warning(
            "photodiode missed %d of %d onsets; using trigger + %d samples", (~found).sum(), found.size, lag
        )
        out[~found] = trigger_samples[~found] + lag
    return out


def _run_loader(bids_path, run_rows, run_splits, onsets_from, image_trigger, drop):
    """A zero-argument callable that reads one run (so runs are read one at a time)."""

    def load() -> ContinuousRecording:
        import mne
        from mne_bids import read_raw_bids

        raw = read_raw_bids(bids_path, verbose="error")
        source = str(bids_path.fpath)
        if TRIGGER_CHANNEL not in raw.ch_names:
            raise DatasetError(f"{source}: no trigger channel {TRIGGER_CHANNEL}")
        events = mne.find_events(raw, stim_channel=TRIGGER_CHANNEL, shortest_event=1, verbose="error")
        samples = events[events[:, 2] == image_trigger, 0] - raw.first_samp
        if samples.size != len(run_rows):
            raise DatasetError(
                f"{source}: {samples.size} image triggers (value {image_trigger} on {TRIGGER_CHANNEL}) but "
                f"{len(run_rows)} presentations in the sample attributes for this run; the files do not "
                "belong together (or pass image_trigger=...)"
            )
        sfreq = float(raw.info["sfreq"])
        if onsets_from == "photodiode":
            pd = [c for c in raw.ch_names if c.startswith(PHOTODIODE_PREFIX)]
            if not pd:
                raise DatasetError(
                    f"{source}: no photodiode channel {PHOTODIODE_PREFIX}*; use onsets='trigger'"
                )
            samples = photodiode_onsets(raw.get_data(picks=pd[:1])[0], samples, sfreq)
        picks = mne.pick_types(raw.info, meg=True, ref_meg=False, exclude=())
        names = [raw.ch_names[i] for i in picks if raw.ch_names[i] not in drop]
        data = raw.get_data(picks=names)
        markers, onsets = [], []
        for row, split, sample in zip(run_rows, run_splits, samples, strict=True):
            if split is not None:
                markers.append(f"{split}/{Path(row['image_path']).stem}")
                onsets.append(sample / sfreq)
        return ContinuousRecording(
            data=data,
            timestamps=np.arange(data.shape[1]) / sfreq,
            ch_names=names,
            sfreq=sfreq,
            onsets=np.asarray(onsets),
            markers=markers,
            info={"source": source},
        )

    return load


def load_things_meg(
    bids_root: str | Path,
    subject: str | int,
    *,
    gallery: Any = None,
    sessions: Sequence[int] | None = None,
    runs: Sequence[int] | None = None,
    preprocessing: Any = None,
    tmin: float = -0.5,
    tmax: float = 1.0,
    onsets: str = "trigger",
    image_trigger: int = IMAGE_TRIGGER,
    drop_channels: Sequence[str] = BROKEN_CHANNELS,
    scaler: Any = None,
    progress: bool = True,
) -> EpochsDataset:
    """Load one THINGS-MEG subject as epochs (the online chain run over each run).

    Parameters
    ----------
    bids_root : path
        The ds004212 folder (``sub-BIGMEG1`` ..., ``sourcedata``).
    subject : int | str
        1-4, ``"BIGMEG1"`` or ``"sub-BIGMEG1"``.
    gallery : Gallery | path | None
        Embeddings of the THINGS images (``brainstream gallery build``); None: no targets.
    sessions, runs : list of int | None
        Restrict to these sessions / runs (None: all found).
    preprocessing : PreprocessingConfig | dict | None
        The causal chain (None: the THINGS-MEG recipe, 0.1-40 Hz, 120 Hz, robust scale, clamp 20).
    tmin, tmax : float
        Window around each onset (s).
    onsets : "trigger" | "photodiode"
        Where image onsets come from (``UPPT001`` pulses, or the ``UADC016`` optical sensor's flashes).
    image_trigger : int
        Trigger value of an image onset.
    drop_channels : list of str
        Channels left out (the broken ``MRO11-1609``).
    scaler : RobustScaler | None
        Fitted on the training windows when None and robust scaling is on (a first pass over the runs).
    progress : bool
        Progress bars.
    """
    if onsets not in ("trigger", "photodiode"):
        raise DatasetError(
            f"onsets must be 'trigger' or 'photodiode' (never the late image_on), got {onsets!r}"
        )
    root = Path(bids_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"THINGS-MEG BIDS root not found: {root}")
    label, number = _subject_label(subject)
    chosen = _find_runs(root, label, sessions, runs)
    rows = read_attributes(root, number)
    splits, test_concepts, removed = label_trials(rows)
    gal = resolve_gallery(gallery, default=False)
    loaders = []
    for ses, run, bp in chosen:
        idx = [
            i
            for i, r in enumerate(rows)
            if int(float(r["session_nr"])) == ses and int(float(r["run_nr"])) == run
        ]
        if not idx:
            raise DatasetError(f"sample attributes have no rows for session {ses}, run {run}")
        if gal is not None:
            gal.indices_of(sorted({Path(rows[i]["image_path"]).stem for i in idx if splits[i] is not None}))
        loaders.append(
            _run_loader(
                bp,
                [rows[i] for i in idx],
                [splits[i] for i in idx],
                onsets,
                image_trigger,
                set(drop_channels),
            )
        )
    logger.info(
        "THINGS-MEG sub-%s: %d runs, %d test concepts, %d training trials of test concepts removed",
        label, len(loaders), len(test_concepts), removed,
    )  # fmt: skip
    ds = epochs_from_recordings(
        loaders,
        preprocessing=default_preprocessing(preprocessing),
        tmin=tmin,
        tmax=tmax,
        subject=number,
        scaler=scaler,
        gallery=gal,
        modality="meg",
        info={
            "source": str(root),
            "loader": "things_meg",
            "subject": label,
            "runs": [[ses, run] for ses, run, _ in chosen],
            "onsets": onsets,
            "dropped_channels": [c for c in drop_channels],
            "test_concepts": len(test_concepts),
            "removed_train_trials_of_test_concepts": removed,
        },
        progress=progress,
    )
    ds.positions = positions_for(ds.ch_names, "meg")  # channel names are known once a run is read
    return ds
