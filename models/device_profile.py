"""Device profiles: which channels a device streams, at what rate, in what unit (``configs/devices/``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from brainstream.models.config_base import StrictModel, load_config


class DeviceProfile(StrictModel):
    """The signal a device delivers. ``channels`` are the data channels in stream order."""

    name: str
    modality: Literal["meg", "eeg"]
    sfreq: float = Field(gt=0)
    channel_type: Literal["mag", "grad", "eeg"]
    unit: str = Field(description="LSL unit string of the data channels, e.g. 'T' or 'V'")
    channels: list[str] = Field(min_length=1)
    montage: str | None = Field(default=None, description="mne built-in montage for EEG sensor positions")
    layout: str | None = Field(default=None, description="mne built-in layout for MEG 2-D sensor positions")
    counter_channel: str | None = Field(default=None, description="name of a sample-counter channel, if any")

    @model_validator(mode="after")
    def _check_unique(self) -> DeviceProfile:
        seen: set[str] = set()
        dups = [c for c in self.channels if c in seen or seen.add(c)]
        if dups:
            raise ValueError(f"duplicate channel names: {dups}")
        return self

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @cached_property
    def positions_2d(self) -> np.ndarray:
        """Sensor positions projected to 2-D, normalised to [0, 1], shape ``(n_channels, 2)``."""
        import mne

        if self.layout:
            layout = mne.channels.read_layout(self.layout)
            by_base = {n.split("-")[0]: i for i, n in enumerate(layout.names)}
            missing = [c for c in self.channels if c.split("-")[0] not in by_base]
            if missing:
                raise ValueError(f"profile {self.name}: channels not in layout {self.layout}: {missing[:10]}")
            pos = np.array(
                [layout.pos[by_base[c.split("-")[0]], :2] for c in self.channels], dtype=np.float64
            )
        elif self.montage:
            info = mne.create_info(self.channels, self.sfreq, "eeg")
            info.set_montage(self.montage, on_missing="raise")
            layout = mne.channels.find_layout(info, ch_type="eeg")
            pos = np.asarray(layout.pos[:, :2], dtype=np.float64)
        else:
            raise ValueError(f"profile {self.name}: needs a 'layout' or 'montage' for sensor positions")
        pos -= pos.min(axis=0)
        pos /= np.maximum(pos.max(axis=0), 1e-12)
        return pos


def load_device_profile(path_or_name: str | Path) -> DeviceProfile:
    """Load a profile by path or by file stem under ``configs/devices/`` (e.g. ``ctf275_things_meg``)."""
    return load_config(path_or_name, DeviceProfile, kind="devices")
