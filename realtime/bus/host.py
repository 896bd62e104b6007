"""Which host a node runs on: ``$BRAINSTREAM_HOST`` if set, else the machine's host name.

Status messages and heartbeats carry this name, the display shows it beside each node, and the clock
beacon of :mod:`brainstream.realtime.session.clocks` is keyed by it. Two machines with the same host name
(or two network namespaces of one machine) are told apart by setting ``BRAINSTREAM_HOST`` (``brainstream
live --host-name``).
"""

from __future__ import annotations

import os
import socket

HOST_ENV = "BRAINSTREAM_HOST"


def host_name() -> str:
    """This process's host name for the bus (``$BRAINSTREAM_HOST``, else ``socket.gethostname()``)."""
    name = os.environ.get(HOST_ENV, "").strip()
    return name or socket.gethostname() or "localhost"
