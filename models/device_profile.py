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
    positions: list[list[float]] | None = Field(
        default=None,
        description="sensor positions, one per channel: 3-D (x, y, z) in metres (head or device frame, e.g. "
        "from a recording's digitisation) or 2-D layout positions in [0, 1]; overrides layout/montage",
    )
    bad_channels: list[str] = Field(
        default_factory=list,
        description="channels known to be bad on this device: decoders mask or interpolate them",
    )

    @model_validator(mode="after")
    def _check_unique(self) -> DeviceProfile:
        seen: set[str] = set()
        dups = [c for c in self.channels if c in seen or seen.add(c)]
        if dups:
            raise ValueError(f"duplicate channel names: {dups}")
        if self.positions is not None:
            dims = {len(p) for p in self.positions}
            if len(self.positions) != len(self.channels) or not dims <= {2, 3} or len(dims) != 1:
                raise ValueError(
                    f"positions must list one (x, y) or one (x, y, z) per channel ({len(self.channels)}), "
                    f"got {len(self.positions)} entries of sizes {sorted(dims)}"
                )
            if not np.all(np.isfinite(np.asarray(self.positions, dtype=np.float64))):
                raise ValueError("positions must be finite numbers")
        unknown = sorted(set(self.bad_channels) - set(self.channels))
        if unknown:
            raise ValueError(f"bad_channels lists channels the profile does not have: {unknown}")
        return self

    @property
    def has_positions(self) -> bool:
        """Whether sensor positions are known (explicit, a layout or a montage)."""
        return bool(self.positions is not None or self.layout or self.montage)

    def sensor_positions(self) -> np.ndarray:
        """3-D positions when known (explicit or the montage's), else the 2-D ones (for interpolation)."""
        if self.positions is not None:
            return np.asarray(self.positions, dtype=np.float64)
        if self.montage:
            import mne

            pos = mne.channels.make_standard_montage(self.montage).get_positions()["ch_pos"]
            missing = [c for c in self.channels if c not in pos]
            if not missing:
                return np.array([pos[c] for c in self.channels], dtype=np.float64)
        return self.positions_2d

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @cached_property
    def positions_2d(self) -> np.ndarray:
        """Sensor positions projected to 2-D, normalised to [0, 1], shape ``(n_channels, 2)``."""
        import mne

        if self.positions is not None:
            pos = np.asarray(self.positions, dtype=np.float64)
            if pos.shape[1] == 3:
                pos = _azimuthal_2d(pos)
        elif self.layout:
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
            raise ValueError(
                f"profile {self.name}: needs 'positions', a 'layout' or a 'montage' for sensor positions"
            )
        pos -= pos.min(axis=0)
        pos /= np.maximum(pos.max(axis=0), 1e-12)
        return pos


def _azimuthal_2d(xyz: np.ndarray) -> np.ndarray:
    """Azimuthal-equidistant projection of 3-D sensor positions around their centre (as topomaps draw)."""
    # centre: the middle of the cap in x/y, its lowest sensors in z (a cap covers about a hemisphere)
    centred = xyz - np.array([*xyz[:, :2].mean(axis=0), xyz[:, 2].min()])
    r = np.linalg.norm(centred, axis=1)
    theta = np.arccos(np.clip(centred[:, 2] / np.maximum(r, 1e-12), -1.0, 1.0))
    phi = np.arctan2(centred[:, 1], centred[:, 0])
    return np.column_stack([theta * np.cos(phi), theta * np.sin(phi)])


def load_device_profile(path_or_name: str | Path) -> DeviceProfile:
    """Load a profile by path or by file stem under ``configs/devices/`` (e.g. ``ctf275_things_meg``)."""
    return load_config(path_or_name, DeviceProfile, kind="devices")


# ------------------------------------------------------------------------------------- profiles from data
_UNITS = {"mag": "T", "grad": "T/m", "eeg": "V"}


def profile_from_info(
    info,
    name: str,
    units: list[str] | None = None,
    layout: str | None = None,
    montage: str | None = None,
) -> tuple[DeviceProfile, list[str]]:
    """A profile of the data channels in an ``mne.Info`` (a recording's, or a stream's); returns
    ``(profile, warnings)``.

    The data channels are the magnetometers (CTF axial gradiometers read as ``mag``), else the planar
    gradiometers, else the EEG channels; references, stim, EOG/EMG typed as such and misc are left out (a
    decoder picks the profile's channels by name out of a stream that carries more). Positions come from the
    channels' locations (a recording's digitisation), else from the named ``montage`` or ``layout``; a
    profile without any is written with a warning, since spatial encoders need positions.
    """
    import mne

    types = info.get_channel_types()
    kind = next((t for t in ("mag", "grad", "eeg") if t in types), None)
    if kind is None:
        raise ValueError(
            f"no MEG or EEG channel among the {len(types)} channels (types: {sorted(set(types))}); "
            "brainstream decodes MEG or EEG"
        )
    picks = [i for i, t in enumerate(types) if t == kind]
    channels = [info.ch_names[i] for i in picks]
    unit = _UNITS[kind]
    if units is not None:
        given = {units[i] for i in picks if units[i]}
        unit = given.pop() if len(given) == 1 else unit
    fields: dict = {
        "name": name,
        "modality": "eeg" if kind == "eeg" else "meg",
        "sfreq": float(info["sfreq"]),
        "channel_type": kind,
        "unit": unit,
        "channels": channels,
        "bad_channels": [c for c in info["bads"] if c in channels],
    }
    warnings: list[str] = []
    locs = np.array([info["chs"][i]["loc"][:3] for i in picks], dtype=np.float64)
    if montage is not None:
        ch_info = mne.create_info(channels, info["sfreq"], "eeg")
        ch_info.set_montage(montage, on_missing="raise", verbose="error")  # fails naming the unknown ones
        fields["montage"] = montage
    elif layout is not None:
        fields["layout"] = layout
    elif np.all(np.isfinite(locs)) and np.all(np.linalg.norm(locs, axis=1) > 0):
        fields["positions"] = np.round(locs, 6).tolist()
    else:
        warnings.append(
            f"the data have no sensor positions for {name}: the profile is written without them, and spatial "
            "encoders (the brain module) and interpolation of bad sensors need positions; give --montage "
            "NAME (EEG) or --layout NAME (MEG), or add 'positions'"
        )
    profile = DeviceProfile(**fields)
    if profile.has_positions:
        profile.positions_2d  # noqa: B018 - a layout that lacks some channels fails here, before writing
    return profile, warnings


def write_device_profile(profile: DeviceProfile, path: str | Path, header: str = "") -> Path:
    """Write ``profile`` as YAML (only the fields that differ from their defaults)."""
    import yaml

    path = Path(path)
    data = profile.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("name", profile.name)
    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
