"""What a recording source yields to the player: the outlets to create and blocks of samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class UnsupportedRecordingError(ValueError):
    """A file the replay cannot read; the message lists what it can."""


@dataclass(frozen=True)
class StreamSpec:
    """One outlet to create: what :func:`realtime.lsl_info.make_stream_info` needs."""

    name: str
    stype: str
    ch_names: tuple[str, ...]
    sfreq: float
    channel_format: str
    ch_types: tuple[str, ...]
    units: tuple[str, ...]
    source_id: str = ""

    @property
    def is_markers(self) -> bool:
        return self.channel_format == "string"


@dataclass
class Block:
    """Samples of every stream for source times ``[t_start, t_end)`` (seconds from the recording start).

    ``values[k]`` is ``(n_channels, n)`` for numeric streams and a list of n samples (lists of str) for
    string streams; ``times[k]`` holds the n sample times, sorted.
    """

    t_start: float
    t_end: float
    values: list
    times: list[np.ndarray]
