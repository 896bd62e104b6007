"""Helpers every loader shares: the target gallery, sensor positions, arguments."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.datasets.epochs import DatasetError

logger = logging.getLogger(__name__)

PROFILES_BY_MODALITY = {"meg": ("ctf275_things_meg",), "eeg": ("eeg64_1000hz", "things_eeg2")}


def resolve_gallery(gallery: Any, space: str | None = None, hint: str | None = None, default: bool = True):
    """A ``Gallery`` from an object, a folder, a hint (e.g. a recording's metadata) or the demo default.

    ``space`` (when known, e.g. from the recording's metadata) must match the gallery's; the error names both.
    """
    from brainstream.models.gallery import Gallery

    if isinstance(gallery, Gallery):
        if space is not None:
            gallery.check_space(space, what=f"gallery at {gallery.root}")
        return gallery
    folder = gallery if gallery is not None else hint
    if folder is None:
        if not default:
            return None
        from brainstream.models.demo_gallery import default_gallery_dir

        folder = default_gallery_dir()
    elif gallery is None and not Path(str(folder)).expanduser().is_dir():
        raise DatasetError(
            f"the recording names the gallery {folder}, which does not exist here; pass gallery=DIR "
            "(or --gallery) pointing to a copy of it"
        )
    return Gallery.load(folder, space=space)


def positions_for(ch_names: list[str], modality: str | None) -> np.ndarray | None:
    """2-D sensor positions from the first device profile that has all ``ch_names`` (None if none does)."""
    from brainstream.models.device_profile import load_device_profile

    for name in PROFILES_BY_MODALITY.get(modality or "", ()):
        profile = load_device_profile(name)
        index = {c: i for i, c in enumerate(profile.channels)}
        if all(c in index for c in ch_names):
            try:
                return profile.positions_2d[[index[c] for c in ch_names]]
            except (ValueError, RuntimeError) as exc:  # positions are a convenience, not a requirement
                logger.warning("no sensor positions from profile %s: %s", name, exc)
    return None


def default_preprocessing(preprocessing: Any):
    """``PreprocessingConfig`` from None (defaults), a dict (validated) or a config."""
    from brainstream.models.config_base import validate_config
    from brainstream.models.preprocessing import PreprocessingConfig

    if preprocessing is None:
        return PreprocessingConfig()
    if isinstance(preprocessing, PreprocessingConfig):
        return preprocessing
    return validate_config(dict(preprocessing), PreprocessingConfig, source="preprocessing")


def require_file(path: str | Path, what: str, hint: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}; {hint}")
    return path
