"""Our own XDF recordings (calibration runs, recorded sessions) → ``EpochsDataset``.

An XDF file holds a signal stream (EEG/MEG samples with LSL timestamps) and a string marker stream whose
``"<split>/<image_id>"`` markers stamp image onsets (``models.events``). Both are read with pyxdf (clock
offsets applied, timestamps dejittered, as LSL's own post-processing does online); a recording that pyxdf
cannot parse — one cut short by a crash — is read with the tolerant reader of ``models.xdf``, which keeps
every complete chunk. The signal then runs through the online chain (``models.datasets.continuous``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.channels import ChannelMismatchError, match_channels
from brainstream.models.datasets.common import (
    default_preprocessing,
    positions_for,
    require_file,
    resolve_gallery,
)
from brainstream.models.datasets.continuous import ContinuousRecording, epochs_from_recordings
from brainstream.models.datasets.epochs import DatasetError, EpochsDataset
from brainstream.models.events import parse_stimulus_marker

logger = logging.getLogger(__name__)

# LSL channel types that are not brain signal (they stay out of the model's input)
NON_DATA_TYPES = {
    "stim",
    "trigger",
    "markers",
    "marker",
    "counter",
    "misc",
    "aux",
    "accelerometer",
    "gyroscope",
}


@dataclass
class _Stream:
    name: str
    type: str
    srate: float
    ch_names: list[str]
    ch_types: list[str]
    data: Any  # (n_channels, n) numeric, or list[str] markers
    timestamps: np.ndarray
    is_markers: bool


def _channels_from_pyxdf(info: dict, n: int) -> tuple[list[str], list[str]]:
    try:
        channels = info["desc"][0]["channels"][0]["channel"]
        names = [str(c.get("label", [""])[0] or f"ch{i}") for i, c in enumerate(channels)]
        types = [str((c.get("type") or [""])[0] or "") for c in channels]
    except (KeyError, IndexError, TypeError):
        return [f"ch{i}" for i in range(n)], [""] * n
    if len(names) != n:
        return [f"ch{i}" for i in range(n)], [""] * n
    return names, types


def _read_pyxdf(path: Path) -> list[_Stream]:
    import pyxdf

    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=True, verbose=False)
    out = []
    for s in streams:
        info = s["info"]
        fmt = info["channel_format"][0]
        ts = np.asarray(s["time_stamps"], dtype=np.float64)
        if fmt == "string":
            values = [str(v[0]) if len(v) else "" for v in s["time_series"]]
            out.append(_Stream(info["name"][0], info["type"][0], 0.0, [], [], values, ts, True))
            continue
        data = np.asarray(s["time_series"]).T
        names, types = _channels_from_pyxdf(info, data.shape[0])
        srate = float(info["nominal_srate"][0])
        out.append(_Stream(info["name"][0], info["type"][0], srate, names, types, data, ts, False))
    return out


def _read_tolerant(path: Path) -> list[_Stream]:
    from brainstream.models.xdf import read_xdf

    file = read_xdf(path, synchronize_clocks=True)
    for problem in file.problems:
        logger.warning("%s: %s", path, problem)
    out = []
    for s in file.streams:
        if s.is_markers:
            out.append(_Stream(s.name, s.type, 0.0, [], [], s.markers, s.timestamps, True))
        else:
            out.append(
                _Stream(s.name, s.type, s.nominal_srate, s.ch_names, s.ch_types, s.data, s.timestamps, False)
            )
    return out


def read_streams(path: Path) -> list[_Stream]:
    """All streams of an XDF file, with pyxdf, else (a damaged file) with the tolerant reader."""
    try:
        return _read_pyxdf(path)
    except Exception as exc:  # pyxdf raises many kinds of errors on truncated files
        logger.warning("pyxdf could not read %s (%s); reading it with the tolerant XDF reader", path, exc)
        return _read_tolerant(path)


def _pick(streams: list[_Stream], name: str | None, markers: bool, path: Path) -> _Stream:
    kind = "marker" if markers else "signal"
    pool = [s for s in streams if s.is_markers == markers]
    if name is not None:
        named = [s for s in pool if s.name == name]
        if not named:
            raise DatasetError(
                f"{path}: no {kind} stream named {name!r}; {kind} streams: {[s.name for s in pool]}"
            )
        return named[0]
    if markers:
        pool = [s for s in pool if any(parse_stimulus_marker(m) for m in s.data)]
    else:
        pool = [s for s in pool if s.srate > 0 and s.timestamps.size]
        brain = [s for s in pool if s.type.upper() in ("EEG", "MEG")]
        pool = brain or pool
    if not pool:
        what = "'<split>/<image_id>' stimulus markers" if markers else "regularly sampled EEG/MEG data"
        raise DatasetError(
            f"{path}: no stream with {what}; streams: {[(s.name, s.type) for s in streams]}. Record the "
            "device stream and the presenter's marker stream together"
        )
    if len(pool) > 1:
        option = "marker_stream" if markers else "signal_stream"
        raise DatasetError(
            f"{path}: several {kind} streams could be meant: {[s.name for s in pool]}; "
            f"choose one with {option}=NAME"
        )
    return pool[0]


def load_xdf_recording(
    path: str | Path,
    *,
    subject: int | None = None,
    gallery: Any = None,
    preprocessing: Any = None,
    tmin: float = -0.5,
    tmax: float = 1.0,
    signal_stream: str | None = None,
    marker_stream: str | None = None,
    ch_names: list[str] | None = None,
    device: str | None = None,
    scaler: Any = None,
    progress: bool = False,
) -> EpochsDataset:
    """Load an XDF recording as epochs.

    Parameters
    ----------
    path : path
        ``.xdf`` file (e.g. from ``brainstream record`` or a calibration run).
    subject : int | None
        Subject id stored on the trials (None: 0).
    gallery : Gallery | path | None
        Targets of the images the markers name (None: the demo gallery).
    preprocessing : PreprocessingConfig | dict | None
        The causal chain (None: defaults).
    tmin, tmax : float
        Window around each onset (s).
    signal_stream, marker_stream : str | None
        Stream names when the file holds several candidates.
    ch_names : list of str | None
        Channels to keep, in this order, matched by name as the live decoder matches them
        (:func:`brainstream.models.channels.match_channels`: CTF names without their system suffix); the
        trials carry these names. None: the ``device`` profile's channels, else every channel whose LSL type
        is brain signal.
    device : str | None
        Device profile (name or path) whose channels to keep, e.g. ``ctf275_things_meg`` for a CTF stream
        that also carries references, stim and misc channels.
    scaler : RobustScaler | None
        Fitted on the training windows when None and robust scaling is on.
    progress : bool
        Progress bars.
    """
    path = require_file(
        path, "XDF recording", "record one with `brainstream record` or `brainstream calibrate`"
    )
    streams = read_streams(path)
    signal = _pick(streams, signal_stream, markers=False, path=path)
    marks = _pick(streams, marker_stream, markers=True, path=path)
    if ch_names is None and device is not None:
        from brainstream.models.device_profile import load_device_profile

        ch_names = list(load_device_profile(device).channels)
    if ch_names is not None:
        try:
            match = match_channels(
                signal.ch_names, ch_names, what="selection", source=f"stream {signal.name!r}"
            )
        except ChannelMismatchError as exc:
            raise DatasetError(f"{path}: {exc}") from None
        rows, names = list(match.index), [str(c) for c in ch_names]
    else:
        rows = [i for i, t in enumerate(signal.ch_types) if t.lower() not in NON_DATA_TYPES]
        names = [signal.ch_names[i] for i in rows]
    if not rows:
        raise DatasetError(
            f"{path}: stream {signal.name!r} has no brain-signal channels (types {signal.ch_types})"
        )
    types = {signal.ch_types[i].lower() for i in rows}
    modality = "meg" if (types & {"meg", "mag", "grad"} or signal.type.upper() == "MEG") else "eeg"
    recording = ContinuousRecording(
        data=np.asarray(signal.data)[rows],
        timestamps=signal.timestamps,
        ch_names=names,
        sfreq=signal.srate,
        onsets=marks.timestamps,
        markers=list(marks.data),
        info={"source": str(path)},
    )
    return epochs_from_recordings(
        [recording],
        preprocessing=default_preprocessing(preprocessing),
        tmin=tmin,
        tmax=tmax,
        subject=0 if subject is None else int(subject),
        scaler=scaler,
        gallery=resolve_gallery(gallery),
        positions=positions_for(names, modality),
        modality=modality,
        info={
            "source": str(path),
            "loader": "xdf",
            "signal_stream": signal.name,
            "marker_stream": marks.name,
        },
        progress=progress,
    )
