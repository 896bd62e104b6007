"""Crash-safe XDF recording of LSL streams and of in-process streams (docs/architecture.md §7)."""

from brainstream.realtime.recording.bus_recorder import BusRecorder
from brainstream.realtime.recording.recorder import SESSION_EVENTS_STREAM, LocalStream, Recorder
from brainstream.realtime.recording.xdf_writer import StreamHeader, XdfWriter

__all__ = ["SESSION_EVENTS_STREAM", "BusRecorder", "LocalStream", "Recorder", "StreamHeader", "XdfWriter"]
