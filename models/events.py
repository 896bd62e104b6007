"""The one convention for stimulus markers: ``"<split>/<image_id>"``, as in THINGS-MEG's trial types.

The same strings appear in LSL marker streams, FIF annotations and XDF marker streams, so online and offline
code parse events identically. ``split`` is ``train`` (seen once), ``test`` (repeated test set) or ``catch``.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "test", "catch")


@dataclass(frozen=True)
class StimulusEvent:
    split: str
    image_id: str

    def marker(self) -> str:
        return format_stimulus_marker(self.split, self.image_id)


def format_stimulus_marker(split: str, image_id: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not image_id or "/" in image_id:
        raise ValueError(f"image id must be non-empty and contain no '/': {image_id!r}")
    return f"{split}/{image_id}"


def parse_stimulus_marker(value: str) -> StimulusEvent | None:
    """Parse a marker string; None for markers that are not stimulus onsets (breaks, run starts...)."""
    split, sep, image_id = str(value).partition("/")
    if not sep or split not in SPLITS or not image_id or "/" in image_id:
        return None
    return StimulusEvent(split, image_id)
