"""Opening a bus socket: bind or connect, loopback check, CURVE, size limit and a short linger."""

from __future__ import annotations

from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator

from brainstream.realtime.bus.security import (
    CurveKeys,
    check_bind_allowed,
    make_client,
    make_server,
    start_authenticator,
)

DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:5701"  # broker XSUB: publishers connect here
DEFAULT_SUB_ENDPOINT = "tcp://127.0.0.1:5702"  # broker XPUB: subscribers connect here
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
DEFAULT_HWM = 1000
LINGER_MS = 200


@dataclass
class OpenedSocket:
    socket: zmq.Socket
    context: zmq.Context
    owns_context: bool
    auth: ThreadAuthenticator | None
    monitor: zmq.Socket | None = None

    def close(self) -> None:
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None
        self.socket.close(linger=LINGER_MS)
        if self.auth is not None:
            self.auth.stop()
        if self.owns_context:
            self.context.term()


def open_socket(
    socket_type: int,
    endpoint: str,
    *,
    bind: bool,
    keys: CurveKeys | None,
    context: zmq.Context | None = None,
    max_message_size: int | None = None,
    hwm: int = DEFAULT_HWM,
    authenticate: bool = True,
    monitor_events: int | None = None,
    immediate: bool = False,
) -> OpenedSocket:
    """Create, secure and bind/connect one socket.

    A binding socket with keys gets its own context, because a ZAP authenticator serves a whole context and
    would otherwise also police unrelated sockets of the process. ``authenticate=False`` skips starting an
    authenticator when the context already has one (the broker's second socket). ``immediate`` sets
    ``ZMQ_IMMEDIATE``: messages are queued only on working connections, so nothing piles up while the peer
    is unreachable.
    """
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(
            f"endpoint must look like tcp://127.0.0.1:5701, ipc:///tmp/x or inproc://x; got {endpoint!r}"
        )
    if bind:
        check_bind_allowed(endpoint, keys)
    secure_server = bind and keys is not None
    owns_context = secure_server and context is None
    ctx = zmq.Context() if owns_context else (context or zmq.Context.instance())
    auth = start_authenticator(ctx, keys) if secure_server and authenticate else None
    sock = ctx.socket(socket_type)
    monitor = None
    try:
        sock.linger = LINGER_MS
        sock.sndhwm = hwm
        sock.rcvhwm = hwm
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        if max_message_size is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, int(max_message_size))
        if keys is not None:
            (make_server if bind else make_client)(sock, keys)
        if monitor_events is not None:  # before connecting, so no early event is missed
            monitor = sock.get_monitor_socket(monitor_events)
        if bind:
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise OSError(
                    f"cannot bind {endpoint}: {exc.strerror}; is another broker or node already using it? "
                    "Pick another port or stop the other process"
                ) from None
        else:
            sock.connect(endpoint)
    except BaseException:
        OpenedSocket(sock, ctx, owns_context, auth, monitor).close()
        raise
    return OpenedSocket(sock, ctx, owns_context, auth, monitor)
