"""Channels from real data: the model's sensors picked by name out of whatever a stream or file carries.

One implementation for every path that feeds an encoder (the live decoder, the dataset loaders, evaluation):

- :func:`match_channels` finds each wanted channel among the available ones, in the wanted order; extra
  channels (references, stim, EEG, misc, counters) are ignored. A CTF sensor matches without its system
  suffix (``MLC11-1609`` is ``MLC11-4304``): every CTF site has its own.
- :class:`ChannelRepair` fills the sensors the model expects but the data lack, or that are marked bad, in the
  way the encoder can use: ``mask`` zeroes them (the brain module's spatial attention then ignores them, see
  :meth:`brainstream.models.encoders.brain_module.BrainModule.mask_sensors`), ``interpolate`` rebuilds them
  from their neighbours with mne's spherical-spline interpolation over the device profile's positions.
- :func:`plan_channels` puts both together for one encoder and one source, and refuses a source that lacks
  more than a configured fraction of the encoder's sensors, naming them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_MISSING",
    "ChannelMatch",
    "ChannelMismatchError",
    "ChannelPlan",
    "ChannelRepair",
    "canonical_name",
    "match_channels",
    "plan_channels",
    "repair_method_for",
]

# a source may lack this fraction of an encoder's sensors (missing or bad) before it is refused
DEFAULT_MAX_MISSING = 0.1

# CTF channel names end in a 4-digit system suffix (``MLC11-4304``); references and ADCs carry it too
_CTF_SUFFIX = re.compile(r"^([A-Z][A-Z0-9]*\d)-\d{4}$")


class ChannelMismatchError(ValueError):
    """A source lacks channels an encoder needs (more than it can do without)."""


def canonical_name(name: str) -> str:
    """The name a channel matches by: a CTF name without its system suffix, any other name as it is."""
    m = _CTF_SUFFIX.match(str(name))
    return m.group(1) if m else str(name)


def _shown(names: Sequence[str], limit: int = 20) -> str:
    more = f" … ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class ChannelMatch:
    """Where each wanted channel is in the available ones.

    Attributes
    ----------
    wanted, available : list of str
    index : int array, shape (n_wanted,)
        Row of each wanted channel in the available data; -1 where it is missing.
    missing : list of str
        Wanted channels the data lack, in wanted order.
    renamed : list of (str, str)
        ``(wanted, available)`` pairs matched without the CTF system suffix.
    """

    wanted: list[str]
    available: list[str]
    index: np.ndarray
    missing: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def present(self) -> np.ndarray:
        """Boolean over the wanted channels: the data have it."""
        return self.index >= 0

    def take(self, data: np.ndarray) -> np.ndarray:
        """The wanted rows of ``data`` (available channels on axis -2), zeros for missing channels."""
        data = np.asarray(data)
        if data.shape[-2] != len(self.available):
            raise ValueError(
                f"expected {len(self.available)} channels on axis -2 (the matched source), got {data.shape}"
            )
        if not self.missing:
            return data[..., self.index, :]
        out = np.zeros((*data.shape[:-2], len(self.wanted), data.shape[-1]), dtype=data.dtype)
        ok = self.present
        out[..., ok, :] = data[..., self.index[ok], :]
        return out


def match_channels(
    available: Sequence[str],
    wanted: Sequence[str],
    *,
    max_missing: float = 0.0,
    what: str = "model",
    source: str = "the data",
) -> ChannelMatch:
    """Find ``wanted`` channels by name in ``available`` (exactly, else by :func:`canonical_name`).

    Parameters
    ----------
    available : sequence of str
        Channels of the source, in source order.
    wanted : sequence of str
        Channels the consumer needs, in its order.
    max_missing : float
        Fraction of ``wanted`` that may be missing (0: none may).
    what, source : str
        Names of the consumer and the source, for the error message.

    Raises
    ------
    ChannelMismatchError
        When more than ``max_missing`` of the wanted channels are missing, naming them.
    """
    if not 0.0 <= max_missing <= 1.0:
        raise ValueError(f"max_missing must be a fraction in [0, 1], got {max_missing}")
    available = [str(c) for c in available]
    wanted = [str(c) for c in wanted]
    exact = {name: i for i, name in enumerate(available)}
    by_key: dict[str, list[int]] = {}
    for i, name in enumerate(available):
        by_key.setdefault(canonical_name(name), []).append(i)
    index = np.full(len(wanted), -1, dtype=np.intp)
    renamed: list[tuple[str, str]] = []
    for k, name in enumerate(wanted):
        if name in exact:
            index[k] = exact[name]
            continue
        rows = by_key.get(canonical_name(name), [])
        if len(rows) == 1:  # an ambiguous base name is not guessed
            index[k] = rows[0]
            renamed.append((name, available[rows[0]]))
    missing = [name for name, i in zip(wanted, index, strict=True) if i < 0]
    if len(missing) > max_missing * len(wanted):
        allowed = f"at most {max_missing:.0%} may be" if max_missing else "none may be"
        raise ChannelMismatchError(
            f"the {what} needs {len(wanted)} channels and {source} lacks {len(missing)} of them: "
            f"{_shown(missing)} ({allowed} missing); stream/record these channels, use a {what} made for "
            "this device, or allow more missing sensors"
        )
    return ChannelMatch(wanted, available, index, missing, renamed)


# ------------------------------------------------------------------------------------------------ repair
RepairMethod = Literal["mask", "interpolate"]


def repair_method_for(arch: dict) -> RepairMethod:
    """How an encoder copes without some sensors: the brain module masks them in its spatial attention (its
    mixing weights are a function of positions), every other encoder needs them interpolated."""
    return "mask" if arch.get("name") == "brain_module" else "interpolate"


def _sphere_from_2d(pos2d: np.ndarray) -> np.ndarray:
    """Lift [0, 1]² layout positions onto a unit upper hemisphere (inverse azimuthal-equidistant)."""
    xy = (np.asarray(pos2d, dtype=np.float64) - 0.5) * 2.0
    r = np.linalg.norm(xy, axis=1)
    theta = np.clip(r, 0.0, 1.0) * (np.pi / 2)  # angle from the vertex
    phi = np.arctan2(xy[:, 1], xy[:, 0])
    return np.column_stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def interpolation_matrix(ch_names: Sequence[str], positions: np.ndarray, bad: Sequence[str]) -> np.ndarray:
    """``(n_bad, n_channels)`` weights that rebuild each bad channel from the good ones (zero columns for
    the bad), by mne's spherical-spline interpolation (``interpolate_bads``) over ``positions``.

    ``positions`` are 3-D (metres, head frame) or 2-D layout positions in [0, 1], lifted onto a sphere.
    """
    import mne

    ch_names = [str(c) for c in ch_names]
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[0] != len(ch_names) or pos.shape[1] not in (2, 3):
        raise ValueError(f"positions must be ({len(ch_names)}, 2 or 3), got {pos.shape}")
    xyz = _sphere_from_2d(pos) * 0.09 if pos.shape[1] == 2 else pos
    center = xyz.mean(axis=0) if pos.shape[1] == 3 else np.zeros(3)
    # the interpolation is linear: interpolating the identity gives its matrix
    info = mne.create_info(ch_names, 1000.0, "eeg")
    raw = mne.io.RawArray(np.eye(len(ch_names)), info, verbose=False)
    montage = mne.channels.make_dig_montage(dict(zip(ch_names, xyz, strict=True)), coord_frame="head")
    raw.set_montage(montage, verbose=False)
    raw.info["bads"] = list(bad)
    raw.interpolate_bads(reset_bads=True, origin=tuple(center), verbose=False)
    rows = [ch_names.index(b) for b in bad]
    weights = raw.get_data()[rows]
    weights[:, rows] = 0.0
    return weights


class ChannelRepair:
    """Fill the channels an encoder gets without data, on ``(n_channels, n)`` arrays of its channels.

    Parameters
    ----------
    ch_names : sequence of str
        The encoder's channels, in its order.
    absent : sequence of str
        Channels without usable data (missing from the source or marked bad).
    method : {"mask", "interpolate"}
        ``mask``: zeros (for an encoder that masks these sensors itself); ``interpolate``: from the others.
    positions : array (n_channels, 2 or 3) | None
        Sensor positions; needed by ``interpolate``.
    """

    def __init__(
        self,
        ch_names: Sequence[str],
        absent: Sequence[str],
        method: RepairMethod,
        positions: np.ndarray | None = None,
    ) -> None:
        if method not in ("mask", "interpolate"):
            raise ValueError(f"method must be 'mask' or 'interpolate', got {method!r}")
        self.ch_names = [str(c) for c in ch_names]
        unknown = [c for c in absent if c not in self.ch_names]
        if unknown:
            raise ValueError(f"channels to repair that the encoder does not have: {_shown(unknown)}")
        self.absent = [c for c in self.ch_names if c in set(absent)]
        self.method: RepairMethod = method
        self.rows = np.array([self.ch_names.index(c) for c in self.absent], dtype=np.intp)
        self.weights: np.ndarray | None = None
        if method == "interpolate" and self.absent:
            if positions is None:
                raise ValueError(
                    f"interpolating {_shown(self.absent)} needs sensor positions: give the device profile "
                    "'positions', a 'layout' or a 'montage' (brainstream device from-recording ... --montage)"
                )
            if len(self.absent) == len(self.ch_names):
                raise ValueError("cannot interpolate every channel: no sensor has data")
            self.weights = interpolation_matrix(self.ch_names, positions, self.absent)

    def __bool__(self) -> bool:
        return bool(self.absent)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Repair ``data`` (channels on axis -2) in place and return it."""
        if not self.absent:
            return data
        data[..., self.rows, :] = 0.0  # NaNs of a bad channel must not reach the weights below
        if self.weights is not None:
            data[..., self.rows, :] = np.matmul(self.weights.astype(data.dtype), data)
        return data


@dataclass(frozen=True)
class ChannelPlan:
    """What one encoder gets from one source: the match, the sensors without data and how they are filled."""

    match: ChannelMatch
    bad: list[str]
    repair: ChannelRepair
    max_missing: float = DEFAULT_MAX_MISSING
    positions: np.ndarray | None = None

    def with_bad(self, names: Sequence[str]) -> ChannelPlan:
        """The same plan with ``names`` marked bad too (e.g. live, from the display); raises
        :class:`ChannelMismatchError` when that leaves too few sensors."""
        return plan_channels(
            self.match.available,
            self.match.wanted,
            self.repair.method,
            bad=[*self.bad, *names],
            positions=self.positions,
            max_missing=self.max_missing,
        )

    @property
    def missing(self) -> list[str]:
        return list(self.match.missing)

    @property
    def absent(self) -> list[str]:
        """Missing or bad, in the encoder's order."""
        return list(self.repair.absent)

    def counts(self) -> dict[str, int]:
        """Counters for a status message."""
        return {
            "channels_used": len(self.match.wanted) - len(self.absent),
            "channels_missing": len(self.match.missing),
            "channels_bad": len(self.bad),
            f"channels_{'masked' if self.repair.method == 'mask' else 'interpolated'}": len(self.absent),
        }

    def warn(self, log: logging.Logger = logger, source: str = "the stream") -> None:
        """Name each missing and bad sensor once, and what is done about it."""
        done = "masked in the spatial attention" if self.repair.method == "mask" else "interpolated"
        if self.match.missing:
            log.warning(
                "missing from %s: %d of the encoder's sensors (%s): %s",
                source,
                len(self.match.missing),
                done,
                ", ".join(self.match.missing),
            )
        if self.bad:
            log.warning(
                "marked bad: %d of the encoder's sensors (%s): %s", len(self.bad), done, ", ".join(self.bad)
            )


def plan_channels(
    available: Sequence[str],
    wanted: Sequence[str],
    method: RepairMethod,
    *,
    bad: Sequence[str] = (),
    positions: np.ndarray | None = None,
    max_missing: float = DEFAULT_MAX_MISSING,
    what: str = "encoder",
    source: str = "the data",
) -> ChannelPlan:
    """Match ``wanted`` in ``available`` and plan the repair of missing and ``bad`` sensors.

    ``bad`` names may carry another CTF system suffix, and may include channels the encoder does not use
    (ignored). The source is refused when missing + bad exceed ``max_missing`` of the encoder's sensors.
    """
    wanted = [str(c) for c in wanted]
    bad_match = match_channels(list(bad), wanted, max_missing=1.0)
    bad_names = [w for w, i in zip(wanted, bad_match.index, strict=True) if i >= 0]
    match = match_channels(available, wanted, max_missing=max_missing, what=what, source=source)
    absent = set(match.missing) | set(bad_names)
    if len(absent) > max_missing * len(wanted):
        raise ChannelMismatchError(
            f"the {what} would run without {len(absent)} of its {len(wanted)} sensors (missing: "
            f"{_shown(match.missing)}; bad: {_shown(bad_names)}), more than the {max_missing:.0%} allowed; "
            "fix the sensors or raise the allowed fraction of missing sensors"
        )
    bad_only = [c for c in bad_names if c not in set(match.missing)]
    repair = ChannelRepair(wanted, sorted(absent), method, positions)
    return ChannelPlan(match, bad_only, repair, max_missing, positions)
