"""Replay recordings (FIF, EDF, BDF, BrainVision, EEGLAB, BIDS, XDF) as real-time LSL outlets."""

from brainstream.realtime.replay.blocks import StreamSpec, UnsupportedRecordingError
from brainstream.realtime.replay.player import Player, PlayerStats
from brainstream.realtime.replay.sources import RawSource, XdfSource, open_recording, supported_formats

__all__ = [
    "Player",
    "PlayerStats",
    "RawSource",
    "StreamSpec",
    "UnsupportedRecordingError",
    "XdfSource",
    "open_recording",
    "supported_formats",
]
