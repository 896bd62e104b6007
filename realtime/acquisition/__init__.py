"""LSL acquisition: resolve a stream, pull it into a ring buffer in a thread, watch it, reconnect.

``StreamReader`` reads a regular signal stream into a :class:`~realtime.ringbuffer.RingBuffer`;
``MarkerReader`` fans an irregular marker stream out to subscriber queues. Both raise alarms (``.alarms``,
``add_alarm_callback``) that a node can publish as ``status.<node>`` messages.
"""

from brainstream.realtime.acquisition.alarms import Alarm
from brainstream.realtime.acquisition.marker_reader import MarkerEvent, MarkerQueue, MarkerReader, MarkerStats
from brainstream.realtime.acquisition.resolve import (
    AmbiguousStreamError,
    StreamNotFoundError,
    StreamResolveError,
    StreamSummary,
    list_streams,
    resolve_stream,
)
from brainstream.realtime.acquisition.stats import AcquisitionStats, Gap
from brainstream.realtime.acquisition.stream_reader import StreamMismatchError, StreamReader

__all__ = [
    "AcquisitionStats",
    "Alarm",
    "AmbiguousStreamError",
    "Gap",
    "MarkerEvent",
    "MarkerQueue",
    "MarkerReader",
    "MarkerStats",
    "StreamMismatchError",
    "StreamNotFoundError",
    "StreamReader",
    "StreamResolveError",
    "StreamSummary",
    "list_streams",
    "resolve_stream",
]
