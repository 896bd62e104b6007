"""The virtual subject: simulated MEG/EEG that responds to images, offline (FIF) and live (LSL).

- :class:`VirtualSubject` generates continuous sensor data chunk by chunk for a schedule of images;
- :func:`simulate_recording` writes an RSVP session (THINGS-like) to a FIF file with image-id annotations;
- :class:`LiveSubject` streams a subject over LSL (signal + marker outlets), self-paced or reacting to an
  external marker stream.

Heavy imports (mne, pylsl) happen inside the submodules, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_SNR",
    "LiveSubject",
    "RSVPDesign",
    "VirtualSubject",
    "make_rsvp_schedule",
    "simulate_recording",
]

_WHERE = {
    "DEFAULT_SNR": "subject",
    "VirtualSubject": "subject",
    "RSVPDesign": "offline",
    "make_rsvp_schedule": "offline",
    "simulate_recording": "offline",
    "LiveSubject": "live",
}

if TYPE_CHECKING:  # pragma: no cover
    from brainstream.realtime.simulation.live import LiveSubject
    from brainstream.realtime.simulation.offline import RSVPDesign, make_rsvp_schedule, simulate_recording
    from brainstream.realtime.simulation.subject import DEFAULT_SNR, VirtualSubject


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"brainstream.realtime.simulation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'brainstream.realtime.simulation' has no attribute {name!r}")
