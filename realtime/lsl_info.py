"""Stream descriptions in LSL's standard ``desc/channels/channel`` layout, to and from ``mne.Info``.

Every outlet the project creates (replay, virtual subject, presenter markers) is described by
:func:`make_stream_info`; every reader turns a description back into names/types/units with
:func:`channels_from_info`. Keeping both directions here keeps them consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pylsl

# mne channel type -> LSL channel type (XDF meta-data conventions) and back
MNE_TO_LSL_TYPE = {
    "mag": "MEG",
    "grad": "MEG",
    "eeg": "EEG",
    "eog": "EOG",
    "ecg": "ECG",
    "emg": "EMG",
    "stim": "STIM",
    "misc": "MISC",
    "ref_meg": "REFMEG",
}
LSL_TO_MNE_TYPE = {
    "MEG": "mag",
    "EEG": "eeg",
    "EOG": "eog",
    "ECG": "ecg",
    "EMG": "emg",
    "STIM": "stim",
    "MISC": "misc",
    "REFMEG": "ref_meg",
    "COUNTER": "misc",
    "MARKERS": "stim",
}
# mne FIFF unit code -> LSL unit string
UNIT_TO_LSL = {"T": "T", "T/m": "T/m", "V": "V", "NA": "", "": ""}


@dataclass(frozen=True)
class ChannelDescription:
    """Names, LSL types and units of a stream's channels, in stream order."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    units: tuple[str, ...]

    def mne_types(self) -> list[str]:
        return [LSL_TO_MNE_TYPE.get(t.upper(), "misc") for t in self.types]


def make_stream_info(
    name: str,
    stype: str,
    ch_names: Sequence[str],
    sfreq: float,
    *,
    ch_types: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    source_id: str = "",
    channel_format: int | str = "float32",
    manufacturer: str = "brainstream",
) -> pylsl.StreamInfo:
    """Build a ``pylsl.StreamInfo`` whose ``desc/channels`` carries labels, types and units.

    Parameters
    ----------
    name, stype : str
        LSL stream name and content type (``"MEG"``, ``"EEG"``, ``"Markers"``).
    ch_names : sequence of str
        Channel labels in stream order.
    sfreq : float
        Nominal rate in Hz; 0 for an irregular stream (markers).
    ch_types, units : sequence of str | None
        LSL channel types (``"MEG"``, ``"EEG"``, ``"MISC"``...) and units; default ``stype`` and ``""``.
    source_id : str
        Unique source id; readers need it to recover a stream that comes back.
    channel_format : int | str
        pylsl channel format (``"float32"``, ``"double64"``, ``"string"``, ``"int32"``...).
    """
    n = len(ch_names)
    if n == 0:
        raise ValueError("a stream needs at least one channel")
    ch_types = list(ch_types) if ch_types is not None else [stype] * n
    units = list(units) if units is not None else [""] * n
    if len(ch_types) != n or len(units) != n:
        raise ValueError(f"ch_types ({len(ch_types)}) and units ({len(units)}) must match ch_names ({n})")
    info = pylsl.StreamInfo(name, stype, n, float(sfreq), channel_format, source_id)
    desc = info.desc()
    desc.append_child_value("manufacturer", manufacturer)
    channels = desc.append_child("channels")
    for label, ctype, unit in zip(ch_names, ch_types, units, strict=True):
        ch = channels.append_child("channel")
        ch.append_child_value("label", str(label))
        ch.append_child_value("type", str(ctype))
        ch.append_child_value("unit", str(unit))
    return info


def channels_from_info(info: pylsl.StreamInfo) -> ChannelDescription:
    """Read channel labels, types and units from a full stream info (as ``inlet.info()`` returns).

    Streams without a ``desc/channels`` block get labels ``"0", "1", ...``, the stream type and no unit.
    """
    n = info.channel_count()
    names, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(names) < n:
        names.append(ch.child_value("label") or str(len(names)))
        types.append(ch.child_value("type") or info.type())
        units.append(ch.child_value("unit") or "")
        ch = ch.next_sibling("channel")
    if len(names) != n:
        names = [str(i) for i in range(n)]
        types = [info.type()] * n
        units = [""] * n
    return ChannelDescription(tuple(names), tuple(types), tuple(units))


def to_mne_info(info: pylsl.StreamInfo):
    """An ``mne.Info`` for a stream: names, types and rate from its description."""
    import mne

    desc = channels_from_info(info)
    sfreq = info.nominal_srate()
    if sfreq <= 0:
        raise ValueError(f"stream '{info.name()}' is irregular (rate 0); mne.Info needs a sampling rate")
    return mne.create_info(list(desc.names), sfreq, desc.mne_types())
