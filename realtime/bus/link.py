"""A connecting bus socket's link to the broker, and the alarm it raises when there is none.

Publishers and subscribers alike watch their ZeroMQ socket's monitor events: when no connection has worked
for :data:`LINK_ALARM_AFTER_S`, the node logs one warning that says where it tried and what to check, and
keeps retrying (ZeroMQ reconnects by itself); when the link comes back it says after how long.
"""

from __future__ import annotations

import logging
import time

import zmq

logger = logging.getLogger(__name__)

#: a connecting socket without a working link to the broker for this long raises an alarm
LINK_ALARM_AFTER_S = 1.0
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
#: the monitor events a link is read from
LINK_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED


class BusLink:
    """The state of one connecting socket's link to the broker (touched by one thread only).

    Parameters
    ----------
    endpoint : str
        Where the socket connects (named in the alarm).
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.up = False
        self.down_since = time.monotonic()
        self.alarm: str | None = None
        self.refused = False
        self.reconnects = 0
        self.handshake_failures = 0
        self._ever_up = False

    def read(self, monitor: zmq.Socket) -> None:
        """Take every pending event of ``monitor``."""
        from zmq.utils.monitor import recv_monitor_message

        while monitor.poll(0):
            self.event(recv_monitor_message(monitor)["event"])

    def event(self, event: int) -> None:
        """Take one monitor event."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._connected()
        elif event == zmq.EVENT_DISCONNECTED and self.up:
            self.up, self.down_since = False, time.monotonic()
        elif event & HANDSHAKE_FAILED:
            self.handshake_failures += 1
            self.refused = True

    def _connected(self) -> None:
        down_s = time.monotonic() - self.down_since
        if self.alarm is not None:
            logger.warning("reached the bus at %s again after %.1f s", self.endpoint, down_s)
        if self._ever_up:
            self.reconnects += 1
        self.up, self._ever_up, self.alarm, self.refused = True, True, None, False

    def check(self) -> None:
        """Raise the alarm (once) when the link has been down for :data:`LINK_ALARM_AFTER_S`."""
        if self.up or self.alarm is not None:
            return
        down_s = time.monotonic() - self.down_since
        if down_s < LINK_ALARM_AFTER_S:
            return
        if self.refused:
            self.alarm = (
                f"the bus at {self.endpoint} refuses this node's CURVE keys; retrying (this host needs the "
                "bus host's server.key and a client key pair listed in its authorized/ folder)"
            )
        else:
            self.alarm = (
                f"cannot reach the bus at {self.endpoint}; retrying (is the bus running on that host, and "
                "are its ports open to this host?)"
            )
        logger.warning("%s", self.alarm)
