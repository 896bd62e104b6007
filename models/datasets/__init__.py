"""Dataset loaders: recordings → ``EpochsDataset`` through the online preprocessing chain.

Sources: simulated FIF recordings (``load_simulated``), THINGS-MEG in BIDS (``load_things_meg``), the
THINGS-EEG2 preprocessed release (``load_things_eeg2``) and our own XDF calibration recordings
(``load_xdf_recording``). ``load_dataset(kind, path, ...)`` dispatches by name.
"""

from __future__ import annotations

from typing import Any

from brainstream.models.datasets.epochs import SPLITS, DataLeakError, DatasetError, EpochsDataset

__all__ = [
    "LOADERS",
    "SPLITS",
    "DataLeakError",
    "DatasetError",
    "EpochsDataset",
    "load_dataset",
    "load_simulated",
    "load_things_eeg2",
    "load_things_meg",
    "load_xdf_recording",
]

LOADERS = {
    "simulated": "brainstream.models.datasets.simulated:load_simulated",
    "things_meg": "brainstream.models.datasets.things_meg:load_things_meg",
    "things_eeg2": "brainstream.models.datasets.things_eeg2:load_things_eeg2",
    "xdf": "brainstream.models.datasets.xdf_recording:load_xdf_recording",
}


def _loader(kind: str):
    import importlib

    if kind not in LOADERS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(LOADERS)}")
    module, name = LOADERS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_dataset(kind: str, path: Any, subject: Any = None, **kwargs: Any) -> EpochsDataset:
    """Load one recording / one subject with the loader named ``kind`` (see ``LOADERS``).

    For ``things_meg`` / ``things_eeg2``, ``path`` is the dataset root and ``subject`` is required; for
    ``simulated`` / ``xdf`` it is the recording file and ``subject`` overrides the subject id.
    """
    loader = _loader(kind)
    if kind in ("things_meg", "things_eeg2"):
        if subject is None:
            raise DatasetError(f"{kind} needs a subject (e.g. subject='1')")
        return loader(path, subject, **kwargs)
    return loader(path, subject=subject, **kwargs)


_LAZY = {
    "load_simulated": "simulated",
    "load_things_meg": "things_meg",
    "load_things_eeg2": "things_eeg2",
    "load_xdf_recording": "xdf",
}


def __getattr__(name: str) -> Any:
    # the loaders import mne / mne-bids / pyxdf: import them on first use, as the real functions
    # (signatures and docstrings intact)
    if name in _LAZY:
        return _loader(_LAZY[name])
    raise AttributeError(f"module 'brainstream.models.datasets' has no attribute {name!r}")
