"""Load the trials a training config (or a checkpoint) asks for, through the dataset loaders.

The loaders (``models.datasets``) run the causal online preprocessing chain over continuous recordings and
cut windows around the stimulus markers, so the encoder trains on exactly what it sees live.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainstream.models.training.data import (
    DataError,
    EncodingData,
    concatenate,
    from_epochs_dataset,
    load_encoding_data,
)

logger = logging.getLogger(__name__)


def _load_one(kind: str, path: str | None, subject: str | None, common: dict[str, Any]) -> EncodingData:
    import importlib
    import inspect

    from brainstream.models import datasets

    if kind not in datasets.LOADERS:
        raise DataError(f"unknown data kind '{kind}'; known: {', '.join(sorted(datasets.LOADERS))}")
    module, name = datasets.LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(module), name)
    accepted = inspect.signature(loader).parameters
    kwargs = {k: v for k, v in common.items() if k in accepted}
    ignored = sorted(set(common) - set(kwargs))
    if ignored:
        # e.g. THINGS-EEG2's release is already preprocessed: its loader takes no preprocessing config
        logger.info("%s loader does not take %s; ignored", kind, ", ".join(ignored))
    try:
        if kind in ("things_meg", "things_eeg2"):
            ds = loader(path, subject, **kwargs)
        else:
            ds = loader(path, **kwargs)
    except datasets.DatasetError as exc:
        raise DataError(str(exc)) from None
    return from_epochs_dataset(ds)


def load_recordings(
    kind: str,
    paths: list[str],
    subjects: list[str] | None,
    preprocessing: Any,
    tmin: float,
    tmax: float,
    gallery: str | None = None,
    options: dict[str, Any] | None = None,
    progress: bool = True,
) -> EncodingData:
    """One :class:`EncodingData` from several recordings (simulated/xdf: one path per subject; THINGS: one
    root and several subjects; npz: trials saved by ``save_encoding_data``)."""
    if not paths:
        raise DataError("no data given: set data.paths in the config or pass --data PATH")
    for p in paths:
        if not Path(p).exists():
            raise DataError(f"data not found: {p}")
    if kind == "npz":
        return concatenate([load_encoding_data(p) for p in paths])
    common: dict[str, Any] = {
        "preprocessing": preprocessing,
        "tmin": tmin,
        "tmax": tmax,
        "progress": progress,
        **(options or {}),
    }
    if gallery is not None:
        common["gallery"] = gallery
    if kind in ("things_meg", "things_eeg2"):
        if len(paths) != 1 or not subjects:
            raise DataError(f"{kind}: give one dataset root in data.paths and the subjects in data.subjects")
        parts = [_load_one(kind, paths[0], s, common) for s in subjects]
    else:
        parts = [_load_one(kind, p, None, common) for p in paths]
    return concatenate(parts)


def load_data(config, progress: bool = True) -> EncodingData:
    """The trials ``config.data`` names, preprocessed and cut as the config says.

    ``.npz`` files (trials saved by ``save_encoding_data``, e.g. ``brainstream train --save-trials``) are
    read as they are, after checking that they were made with this config's preprocessing and window.
    """
    d = config.data
    if d.paths and all(str(p).endswith(".npz") for p in d.paths):
        data = load_recordings("npz", d.paths, None, None, 0.0, 0.0)
        _check_cached(data, config)
        return data
    tmin, tmax = config.input_window()
    if config.context and config.preprocessing.baseline is not None:
        logger.warning(
            "causal model trained on baseline-corrected windows: served on sliding windows (no baseline) it "
            "would see other input; set preprocessing.baseline: null for a model meant for sliding windows"
        )
    data = load_recordings(
        d.kind,
        d.paths,
        d.subjects,
        config.preprocessing,
        tmin,
        tmax,
        d.gallery,
        d.loader_options,
        progress,
    )
    expected = int(round((tmax - tmin) * data.sfreq))
    if config.context and data.n_times != expected:
        logger.warning(
            "the %s loader gave %d samples per window where the causal model's window [%g, %g) s holds %d; "
            "its aggregation spans the last %d samples, not the configured window",
            d.kind, data.n_times, tmin, tmax, expected, data.n_times - config.context,
        )  # fmt: skip
    return data


def infer_kind(paths: list[str]) -> str:
    suffixes = {Path(p).suffix.lower() for p in paths}
    if suffixes <= {".fif"}:
        return "simulated"
    if suffixes <= {".xdf"}:
        return "xdf"
    if suffixes <= {".npz"}:
        return "npz"
    raise DataError(
        f"cannot tell the data kind of {paths}; pass --kind (simulated, xdf, things_meg, things_eeg2)"
    )


def load_for_checkpoint(
    meta, paths, kind: str = "auto", subjects=None, progress: bool = True, options: dict | None = None
) -> EncodingData:
    """Trials preprocessed and windowed exactly as the checkpoint ``meta`` expects (``options`` are added
    to the loader options, e.g. the checkpoint's fitted ``scaler`` as the live decoder uses it)."""
    from brainstream.models.preprocessing import PreprocessingConfig

    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    paths = [str(p) for p in paths]
    train_cfg = (meta.training or {}).get("config") or {}
    data_cfg = train_cfg.get("data") or {}
    if kind == "auto":
        kind = (
            data_cfg.get("kind")
            if data_cfg.get("kind") and infer_kind_safe(paths) is None
            else infer_kind(paths)
        )
    pre = (
        PreprocessingConfig.model_validate(meta.preprocessing)
        if meta.preprocessing
        else PreprocessingConfig()
    )
    return load_recordings(
        kind,
        paths,
        subjects or data_cfg.get("subjects"),
        pre,
        meta.tmin,
        meta.tmax,
        data_cfg.get("gallery"),
        {**(data_cfg.get("loader_options") or {}), **(options or {})},
        progress,
    )


def infer_kind_safe(paths: list[str]) -> str | None:
    try:
        return infer_kind(paths)
    except DataError:
        return None


def _check_cached(data: EncodingData, config) -> None:
    want = config.preprocessing.model_dump(mode="json")
    if config.data.kind == "npz":
        return  # the config says the trials are the data: nothing to compare against
    tmin, tmax = config.input_window()
    n_times = int(round((tmax - tmin) * (config.preprocessing.sfreq_out or data.sfreq)))
    same_pre = data.preprocessing is None or all(data.preprocessing.get(k) == v for k, v in want.items())
    if not same_pre or abs(data.tmin - tmin) > 1e-6 or data.n_times != n_times:
        raise DataError(
            "the saved trials were made with another preprocessing or window than this config "
            f"(trials: tmin {data.tmin:g} s, {data.n_times} samples at {data.sfreq:g} Hz); "
            "re-load the recordings (pass the .fif/.xdf files) or use the config they were saved with"
        )
