"""Recordings of the virtual subject (``brainstream simulate --out FILE.fif``) → ``EpochsDataset``.

The FIF holds the sensor data, one annotation per image onset (``train/<id>`` / ``test/<id>``) and, in
``raw.info['description']``, a JSON object naming the gallery folder, its space and the subject seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.datasets.common import (
    default_preprocessing,
    positions_for,
    require_file,
    resolve_gallery,
)
from brainstream.models.datasets.continuous import ContinuousRecording, epochs_from_recordings
from brainstream.models.datasets.epochs import DatasetError, EpochsDataset

logger = logging.getLogger(__name__)


def read_simulation_metadata(raw) -> dict[str, Any]:
    """The JSON metadata the simulator stores in ``raw.info['description']`` ({} if there is none)."""
    text = raw.info.get("description") or ""
    if not text.strip().startswith("{"):
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        logger.warning("description of the recording is not valid JSON (%s); ignoring it", exc)
        return {}
    return meta if isinstance(meta, dict) else {}


def _subject_from_meta(meta: dict[str, Any]) -> int:
    value = meta.get("subject", meta.get("seed", 0))
    try:
        return int(value)
    except (TypeError, ValueError):
        logger.warning("subject %r in the recording's metadata is not an integer; using 0", value)
        return 0


def recording_from_raw(raw, source: str = "") -> ContinuousRecording:
    """Data channels, timestamps in seconds from the first sample, and annotation markers of an mne Raw."""
    import mne

    picks = mne.pick_types(raw.info, meg=True, eeg=True, ref_meg=False, exclude=())
    if not len(picks):
        raise DatasetError(f"{source}: no MEG or EEG channels in the recording")
    data = raw.get_data(picks=picks)
    sfreq = float(raw.info["sfreq"])
    timestamps = np.arange(data.shape[1]) / sfreq
    ann = raw.annotations
    # annotations carry absolute times when orig_time is set (then the first sample is at first_time)
    offset = raw.first_time if ann.orig_time is not None else 0.0
    return ContinuousRecording(
        data=data,
        timestamps=timestamps,
        ch_names=[raw.ch_names[i] for i in picks],
        sfreq=sfreq,
        onsets=np.asarray(ann.onset, dtype=np.float64) - offset,
        markers=list(ann.description),
        info={"source": source},
    )


def load_simulated(
    path: str | Path,
    *,
    gallery: Any = None,
    preprocessing: Any = None,
    tmin: float = -0.5,
    tmax: float = 1.0,
    subject: int | None = None,
    scaler: Any = None,
    progress: bool = False,
) -> EpochsDataset:
    """Load a virtual-subject FIF recording as epochs.

    Parameters
    ----------
    path : path
        ``.fif`` written by ``brainstream simulate``.
    gallery : Gallery | path | None
        Target embeddings; None uses the gallery the recording names (its metadata), else the demo gallery.
        Its space must equal the recording's.
    preprocessing : PreprocessingConfig | dict | None
        The causal chain (None: the default THINGS-MEG recipe).
    tmin, tmax : float
        Window around each onset (s).
    subject : int | None
        Subject id (None: the recording's seed, else 0).
    scaler : RobustScaler | None
        Fitted on the training windows when None and robust scaling is on.
    progress : bool
        Progress bars.
    """
    import mne

    path = require_file(path, "simulated recording", "make one with `brainstream simulate --out FILE.fif`")
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    meta = read_simulation_metadata(raw)
    gal = resolve_gallery(
        gallery, space=meta.get("space"), hint=meta.get("gallery") or meta.get("gallery_dir")
    )
    recording = recording_from_raw(raw, source=str(path))
    if subject is None:
        subject = _subject_from_meta(meta)
    types = set(raw.get_channel_types(picks=recording.ch_names))
    modality = "eeg" if types == {"eeg"} else "meg"
    return epochs_from_recordings(
        [recording],
        preprocessing=default_preprocessing(preprocessing),
        tmin=tmin,
        tmax=tmax,
        subject=subject,
        scaler=scaler,
        gallery=gal,
        positions=positions_for(recording.ch_names, modality),
        modality=modality,
        info={"source": str(path), "loader": "simulated", "simulation": meta},
        progress=progress,
    )
