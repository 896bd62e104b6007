"""Calibration trials: recordings (XDF runs, or a virtual subject simulated offline) → ``EncodingData``.

The causal chain runs in two steps that together are exactly the online chain
(:class:`models.preprocessing.Preprocessor` filters, resamples, THEN scales and clamps):

1. :func:`filter_recording` runs the chain without scaling, at full rate, once (the costly part), keeping
   only model-rate samples in memory;
2. :func:`epochs_from_filtered` runs the remaining steps (robust scaler fitted on TRAINING windows only,
   scaling, clamping, baseline, windows) through ``models.datasets.continuous.epochs_from_recordings``.

Several runs of one subject (a resumed calibration) are filtered one by one and share one scaler.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.datasets.continuous import ContinuousRecording, epochs_from_recordings
from brainstream.models.datasets.epochs import DatasetError, EpochsDataset
from brainstream.models.preprocessing import PreprocessingConfig, Preprocessor, RobustScaler
from brainstream.models.training.data import (
    EncodingData,
    from_epochs_dataset,
    load_encoding_data,
    save_encoding_data,
)

logger = logging.getLogger(__name__)

NON_DATA_TYPES = {"stim", "trigger", "markers", "marker", "counter", "misc", "aux"}


def scaling_only(config: PreprocessingConfig) -> PreprocessingConfig:
    """The part of ``config`` that runs after filtering and resampling (scaling, clamp, baseline)."""
    return config.model_copy(update={"l_freq": None, "h_freq": None, "notch_freqs": [], "sfreq_out": None})


def filter_recording(
    rec: ContinuousRecording, config: PreprocessingConfig, chunk_s: float = 10.0
) -> ContinuousRecording:
    """Filter + resample ``rec`` with the causal chain (no scaling); events are kept as they are."""
    raw_cfg = config.model_copy(update={"robust_scale": False, "clamp": None})
    pre = Preprocessor(raw_cfg, rec.ch_names, rec.sfreq)
    step = max(1, int(round(chunk_s * rec.sfreq)))
    outs, tss = [], []
    for s in range(0, rec.data.shape[1], step):
        o, t = pre.process(rec.data[:, s : s + step], rec.timestamps[s : s + step])
        outs.append(o)
        tss.append(t)
    data = np.concatenate(outs, axis=1) if outs else np.zeros((len(rec.ch_names), 0), np.float32)
    ts = np.concatenate(tss) if tss else np.zeros(0)
    return replace(rec, data=data, timestamps=ts, sfreq=pre.sfreq_out)


def epochs_from_filtered(
    recordings: Sequence[ContinuousRecording],
    config: PreprocessingConfig,
    tmin: float,
    tmax: float,
    *,
    gallery: Any,
    subject: int = 0,
    scaler: RobustScaler | None = None,
    positions: np.ndarray | None = None,
    modality: str | None = None,
    info: dict[str, Any] | None = None,
) -> EpochsDataset:
    """Epochs of filtered (model-rate) recordings: scaler on training windows, scaling, clamp, baseline."""
    ds = epochs_from_recordings(
        list(recordings),
        preprocessing=scaling_only(config),
        tmin=tmin,
        tmax=tmax,
        subject=subject,
        scaler=scaler,
        gallery=gallery,
        positions=positions,
        modality=modality,
        info=info,
    )
    return replace(ds, preprocessing=config)  # the checkpoint must name the whole chain


def to_encoding(ds: EpochsDataset, subject_name: str) -> EncodingData:
    data = from_epochs_dataset(ds)
    data.subject_names = [subject_name]
    return data


def cached_trials(
    folder: str | Path | None, key: dict[str, Any], build: Callable[[], EncodingData]
) -> EncodingData:
    """``build()``, kept in ``folder`` under a digest of ``key`` and read back from there next time.

    For development runs that meet the same simulated sessions again (``key`` must name everything the
    trials depend on: :func:`calibration.pretrained.simulation_key` and the session's own settings).
    ``folder`` None: no cache, ``build()`` every time. Safe across processes (one builds, the others wait).
    """
    if folder is None:
        return build()
    from brainstream.models.cache import file_lock

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(folder) / f"trials-{digest}.npz"
    with file_lock(path.with_name(f".{path.name}.lock")):
        if path.is_file():
            return load_encoding_data(path)
        data = build()
        tmp = save_encoding_data(path.with_name(f".tmp-{path.name}"), data)
        os.replace(tmp, path)
    return data


# -------------------------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class SimTrial:
    onset: float
    image_id: str
    split: str


def timeline(
    items: Sequence[tuple[str, str]],
    image_s: float,
    isi_s: float,
    jitter_s: float,
    seed: int,
    lead_s: float = 2.0,
) -> list[SimTrial]:
    """Onsets for ``(split, image_id)`` items shown back to back (image + jittered blank)."""
    rng = np.random.default_rng([seed, 29])
    out, t = [], lead_s
    for split, image_id in items:
        out.append(SimTrial(t, image_id, split))
        t += image_s + isi_s + float(rng.uniform(-jitter_s, jitter_s))
    return out


def simulate_filtered(
    profile: str,
    gallery: Any,
    seed: int,
    trials: Sequence[SimTrial],
    config: PreprocessingConfig,
    image_s: float,
    snr: float | None = None,
    shared_fraction: float | None = None,
    tail_s: float = 2.0,
    progress: bool = False,
    desc: str = "simulating",
) -> tuple[ContinuousRecording, Any]:
    """Generate a virtual subject's session offline and filter it on the fly (memory: model rate only).

    Returns the filtered recording and the subject (its metadata describes what was simulated).
    """
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    from brainstream.realtime.simulation.subject import VirtualSubject

    kwargs = {} if snr is None else {"snr": snr}
    if shared_fraction is not None:
        kwargs["shared_fraction"] = shared_fraction
    subject = VirtualSubject(profile, gallery, seed=seed, **kwargs)
    for tr in trials:
        subject.add_stimulus(tr.onset, tr.onset + image_s, tr.image_id)
    n_total = int(np.ceil((trials[-1].onset + image_s + tail_s) * subject.sfreq)) if trials else 0
    raw_cfg = config.model_copy(update={"robust_scale": False, "clamp": None})
    pre = Preprocessor(raw_cfg, subject.ch_names, subject.sfreq)
    step = int(subject.sfreq)  # one-second blocks: the generator's natural unit
    outs, tss = [], []
    with (
        threadpool_limits(limits=1, user_api="blas"),
        tqdm(
            total=n_total, unit="sample", unit_scale=True, desc=desc, disable=not progress, leave=False
        ) as bar,
    ):
        while subject.n_generated < n_total:
            n = min(step, n_total - subject.n_generated)
            t0 = subject.n_generated
            block = subject.generate(n)
            o, t = pre.process(block, (t0 + np.arange(n)) / subject.sfreq)
            outs.append(o)
            tss.append(t)
            bar.update(n)
    rec = ContinuousRecording(
        data=np.concatenate(outs, axis=1),
        timestamps=np.concatenate(tss),
        ch_names=list(subject.ch_names),
        sfreq=pre.sfreq_out,
        onsets=np.array([t.onset for t in trials]),
        markers=[f"{t.split}/{t.image_id}" for t in trials],
        info={"source": f"virtual subject {seed}", "seed": seed},
    )
    return rec, subject


# ---------------------------------------------------------------------------------------------- XDF runs
@dataclass
class RunStreams:
    """One calibration run read from its XDF file (signal at full rate, markers)."""

    path: Path
    recording: ContinuousRecording
    modality: str
    markers: list[str]
    marker_times: np.ndarray


def read_run(
    path: str | Path, signal_stream: str | None = None, marker_stream: str | None = None
) -> RunStreams:
    """The signal and presenter-marker streams of one calibration XDF (pyxdf, else the tolerant reader)."""
    from brainstream.models.datasets.xdf_recording import read_streams

    path = Path(path)
    streams = read_streams(path)
    signals = [s for s in streams if not s.is_markers and s.srate > 0 and s.timestamps.size]
    if signal_stream:
        signals = [s for s in signals if s.name == signal_stream]
    markers = [s for s in streams if s.is_markers and s.timestamps.size]
    if marker_stream:
        markers = [s for s in markers if s.name == marker_stream]
    if len(signals) != 1 or len(markers) != 1:
        raise DatasetError(
            f"{path}: expected one signal stream and one marker stream, found signals "
            f"{[s.name for s in signals]} and marker streams {[s.name for s in markers]}; the calibration "
            "run may have been cut before anything was recorded (delete the file and resume)"
        )
    sig, mk = signals[0], markers[0]
    rows = [i for i, t in enumerate(sig.ch_types) if t.lower() not in NON_DATA_TYPES]
    names = [sig.ch_names[i] for i in rows]
    types = {sig.ch_types[i].lower() for i in rows}
    modality = "meg" if (types & {"meg", "mag", "grad"} or sig.type.upper() == "MEG") else "eeg"
    rec = ContinuousRecording(
        data=np.asarray(sig.data)[rows],
        timestamps=np.asarray(sig.timestamps),
        ch_names=names,
        sfreq=sig.srate,
        onsets=np.asarray(mk.timestamps),
        markers=list(mk.data),
        info={"source": str(path)},
    )
    return RunStreams(path, rec, modality, list(mk.data), np.asarray(mk.timestamps))


def channel_quality(rec: ContinuousRecording, filtered: ContinuousRecording, line_freq: float = 50.0) -> dict:
    """Per-channel quality of a raw recording: spread after filtering, line noise, non-finite samples."""
    from scipy.signal import welch

    raw = np.asarray(rec.data, dtype=np.float64)
    n = raw.shape[1]
    seg = raw[:, : min(n, int(60 * rec.sfreq))]
    finite = np.isfinite(seg).all(axis=0)
    seg = seg[:, finite]
    line_ratio = np.full(len(rec.ch_names), np.nan)
    if seg.shape[1] > int(4 * rec.sfreq):
        f, p = welch(seg - seg.mean(axis=1, keepdims=True), fs=rec.sfreq, nperseg=int(2 * rec.sfreq))
        band = (f >= 1) & (f <= 40)
        line = np.abs(f - line_freq) <= 1.0
        if line.any():
            line_ratio = p[:, line].mean(axis=1) / np.maximum(p[:, band].mean(axis=1), 1e-300)
    x = filtered.data
    q25, q75 = np.nanpercentile(x, [25, 75], axis=1)
    iqr = q75 - q25
    log_iqr = np.log(np.maximum(iqr, 1e-300))
    med = np.median(log_iqr)
    mad = np.median(np.abs(log_iqr - med)) * 1.4826 + 1e-12
    z = (log_iqr - med) / mad
    return {
        "ch_names": list(rec.ch_names),
        "iqr": iqr.tolist(),
        "z_log_iqr": z.tolist(),
        "line_ratio": line_ratio.tolist(),
        "nonfinite_fraction": (~np.isfinite(raw)).mean(axis=1).tolist(),
        "bad": [c for c, zz in zip(rec.ch_names, z, strict=True) if abs(zz) > 5],
        "seconds": float(n / rec.sfreq),
    }
