"""Subscriber: validated messages, per-source gap counting and publisher liveness from heartbeats."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from pylsl import local_clock

from brainstream.realtime.bus._socket import (
    DEFAULT_HWM,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_SUB_ENDPOINT,
    open_socket,
)
from brainstream.realtime.bus.link import LINK_EVENTS, BusLink
from brainstream.realtime.bus.message import BusMessage, MalformedMessageError, decode
from brainstream.realtime.bus.security import CurveKeys, as_keys

HEARTBEAT_PREFIX = "status."
#: a publisher silent for this many of its heartbeat intervals is declared lost
LOST_AFTER_INTERVALS = 3.0
#: at most one socket re-creation per this many seconds (a peer that keeps sending junk cannot make us spin)
RECONNECT_MIN_INTERVAL_S = 0.5
LINK_CHECK_S = 0.25  # while the link to the broker is down, look at it this often
#: a forward jump in one publisher's ``seq`` larger than this is not counted as lost messages but as a reset
#: of that publisher (a forged or corrupted header): ZeroMQ drops whole queues of at most a high-water mark
#: (1000 by default), so a real loss between two messages that both arrived is far smaller
MAX_SEQ_JUMP = 10_000
#: publishers remembered for gap counting; the least recently heard is forgotten beyond this (a sender that
#: invents a new ``src`` per message cannot make a subscriber grow without bound)
MAX_TRACKED_PUBLISHERS = 1024


@dataclass
class PublisherState:
    """What a subscriber knows about one publisher (one ``src``)."""

    src: str
    name: str
    last_seen: float
    interval: float | None = None
    stopped: bool = False
    lost: bool = False

    def state(self, now: float) -> str:
        if self.stopped:
            return "stopped"
        if self.interval is not None and now - self.last_seen > LOST_AFTER_INTERVALS * self.interval:
            return "lost"
        return "alive"


class Subscriber:
    """Receive validated :class:`BusMessage` objects.

    Parameters
    ----------
    endpoint : str
        The broker's XPUB (default ``tcp://127.0.0.1:5702``), or a publisher's bound endpoint.
    topics : sequence of str
        Topic prefixes to receive (``""`` = everything).
    bind : bool
        Bind instead of connect (non-loopback needs ``keys``).
    keys : path | CurveKeys | None
        CURVE keys folder; see :mod:`realtime.bus.security`.
    max_message_size : int
        ``ZMQ_MAXMSGSIZE``: a peer sending anything larger is disconnected by ZeroMQ.
    heartbeats : bool
        Also listen to publishers' heartbeats (``status.<name>.heartbeat``) to track liveness and losses at
        the tail of a stream. Heartbeats are consumed here and not returned by :meth:`recv` unless
        ``deliver_heartbeats``.
    context : zmq.Context | None
        Defaults to the process-wide context (needed for ``inproc://``).

    Notes
    -----
    Start order does not matter: connecting never blocks and ZeroMQ reconnects on its own; messages sent
    before a subscription reached the publisher are not delivered (PUB/SUB's "slow joiner") and are not
    counted as gaps, because counting starts at the first message seen from each source.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_SUB_ENDPOINT,
        topics: Sequence[str] = ("",),
        *,
        bind: bool = False,
        keys: str | Path | CurveKeys | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        heartbeats: bool = True,
        deliver_heartbeats: bool = False,
        hwm: int = DEFAULT_HWM,
        context: zmq.Context | None = None,
    ) -> None:
        if isinstance(topics, str):
            raise TypeError(f"topics must be a sequence of prefixes, e.g. ({topics!r},), not a single string")
        self.endpoint = endpoint
        self.topics = tuple(topics)
        self.deliver_heartbeats = deliver_heartbeats
        self._subscriptions = set(self.topics)
        if heartbeats and not any(HEARTBEAT_PREFIX.startswith(t) for t in self.topics):
            self._subscriptions.add(HEARTBEAT_PREFIX)
        self._socket_args = {
            "bind": bind,
            "keys": as_keys(keys),
            "context": context,
            "max_message_size": max_message_size,
            "hwm": hwm,
        }
        self._opened = None
        self._monitor: zmq.Socket | None = None
        self._reconnect_due: float | None = None
        self._last_reconnect = -float("inf")
        # a connecting subscriber says when it cannot reach the bus, as publishers do (bus/link.py)
        self._link = None if bind else BusLink(endpoint)
        self._open()
        self._last_seq: dict[str, dict[str, int]] = {}  # src (one publisher instance) -> topic -> seq
        self._publishers: dict[str, PublisherState] = {}
        self._malformed: Counter[str] = Counter()
        self._counts = Counter(
            received=0,
            delivered=0,
            gaps=0,
            out_of_order=0,
            seq_resets=0,
            heartbeats=0,
            publishers_lost=0,
            reconnects=0,
        )

    def _open(self) -> None:
        connecting = not self._socket_args["bind"]
        self._opened = open_socket(
            zmq.SUB, self.endpoint, monitor_events=LINK_EVENTS if connecting else None, **self._socket_args
        )
        for prefix in self._subscriptions:
            self._opened.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        # ZeroMQ does not reconnect after a protocol error (e.g. a message over ZMQ_MAXMSGSIZE): watch for
        # an established connection dropping and then open a fresh socket, so one bad message cannot cut a
        # node off for good (disconnect() + connect() on the same socket trips an assertion in libzmq 4.3.5).
        # Failed handshakes (keys refused) are only counted (by the link): ZeroMQ retries those itself.
        self._monitor = self._opened.monitor
        self._poller = zmq.Poller()
        self._poller.register(self._opened.socket, zmq.POLLIN)
        if self._monitor is not None:
            self._poller.register(self._monitor, zmq.POLLIN)

    def _close_socket(self) -> None:
        opened, self._opened = self._opened, None
        if opened is None:
            return
        self._monitor = None  # closed with the socket
        opened.socket.linger = 0
        opened.close()

    # --------------------------------------------------------------- receiving
    def recv(self, timeout: float | None = None) -> BusMessage | None:
        """Next valid message on a subscribed topic, or None after ``timeout`` seconds (None: wait forever).

        Malformed messages are dropped and counted in ``stats["malformed"]``; they never raise.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            if self._reconnect_due is not None and now >= self._reconnect_due:
                self._reconnect()
            socket = self._socket()
            waits = [t - now for t in (deadline, self._reconnect_due) if t is not None]
            if self._link is not None and not self._link.up:
                self._link.check()
                waits.append(LINK_CHECK_S)  # wake to raise the alarm on time even without messages
            wait_ms = max(0, int(min(waits) * 1000)) if waits else None
            ready = dict(self._poller.poll(wait_ms))
            if socket in ready:
                message = self._accept(socket.recv_multipart(copy=False))
                if message is not None:
                    return message
            elif self._monitor is not None and self._monitor in ready:
                self._read_monitor()
            elif deadline is not None and time.monotonic() >= deadline:
                self._update_liveness()
                return None

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            link = self._link
            assert link is not None  # only a connecting subscriber has a monitor, and a link
            was_up = link.up
            link.event(event)
            if was_up and not link.up:  # an established connection dropped
                self._reconnect_due = max(time.monotonic(), self._last_reconnect + RECONNECT_MIN_INTERVAL_S)

    def _reconnect(self) -> None:
        # queued messages go with the old socket; what is lost shows up as gaps
        self._reconnect_due = None
        self._last_reconnect = time.monotonic()
        self._close_socket()
        self._open()
        self._counts["reconnects"] += 1

    def drain(self, timeout: float | None = None) -> list[BusMessage]:
        """Wait up to ``timeout`` for one message, then take all already queued too (oldest first)."""
        first = self.recv(timeout)
        if first is None:
            return []
        messages = [first]
        while (more := self.recv(0)) is not None:
            messages.append(more)
        return messages

    def recv_latest(self, timeout: float | None = None) -> tuple[BusMessage | None, int]:
        """Newest queued message and how many older ones were skipped (for nodes that fall behind)."""
        messages = self.drain(timeout)
        if not messages:
            return None, 0
        return messages[-1], len(messages) - 1

    def _accept(self, frames: list[Any]) -> BusMessage | None:
        self._counts["received"] += 1
        try:
            message = decode(frames)
        except MalformedMessageError as exc:
            self._malformed[exc.reason] += 1
            return None
        now = local_clock()
        header = message.header
        publisher = self._publishers.pop(message.src, None)
        if publisher is None:
            publisher = PublisherState(src=message.src, name=message.src.rsplit(":", 1)[0], last_seen=now)
            self._forget_oldest_publisher()
        self._publishers[message.src] = publisher  # re-inserted: the dict is ordered by last heard
        publisher.last_seen = now
        publisher.lost = False
        self._count_gap(message.src, message.topic, message.seq)
        if message.is_heartbeat:
            self._counts["heartbeats"] += 1
            interval = header.get("interval")
            if isinstance(interval, int | float) and interval > 0:
                publisher.interval = float(interval)
            publisher.stopped = header.get("state") == "stopped"
            self._count_tail_losses(message.src, header.get("last_seq"))
            if not self.deliver_heartbeats:
                return None
        if not self._wanted(message.topic):
            return None
        self._counts["delivered"] += 1
        return message

    def _wanted(self, topic: str) -> bool:
        return any(topic.startswith(prefix) for prefix in self.topics)

    def _forget_oldest_publisher(self) -> None:
        while len(self._publishers) >= MAX_TRACKED_PUBLISHERS:
            oldest = next(iter(self._publishers))
            del self._publishers[oldest]
            self._last_seq.pop(oldest, None)

    def _count_gap(self, src: str, topic: str, seq: int) -> None:
        """Count messages missing between this one and the last from the same publisher instance on
        ``topic``. Backwards (or repeated) and implausibly far forward count as a reset, not as losses."""
        seqs = self._last_seq.setdefault(src, {})
        last = seqs.get(topic)
        if last is not None:
            if seq <= last or seq - last - 1 > MAX_SEQ_JUMP:
                self._counts["seq_resets"] += 1
                if seq <= last:
                    self._counts["out_of_order"] += 1
            else:
                self._counts["gaps"] += seq - last - 1
        seqs[topic] = seq

    def _count_tail_losses(self, src: str, last_seq: Any) -> None:
        # messages lost after the last one we saw show up only here (or when the next one arrives)
        if not isinstance(last_seq, dict):
            return
        seqs = self._last_seq.get(src, {})
        for topic, seq in last_seq.items():
            last = seqs.get(topic)
            if last is None or not isinstance(seq, int) or isinstance(seq, bool) or seq <= last:
                continue
            if seq - last > MAX_SEQ_JUMP:
                self._counts["seq_resets"] += 1
            else:
                self._counts["gaps"] += seq - last
            seqs[topic] = seq

    def _update_liveness(self) -> None:
        now = local_clock()
        for publisher in self._publishers.values():
            if publisher.state(now) == "lost" and not publisher.lost:
                publisher.lost = True
                self._counts["publishers_lost"] += 1

    # -------------------------------------------------------------- inspection
    def publishers(self) -> dict[str, dict[str, Any]]:
        """Per publisher heard from: ``name``, ``state`` (alive|lost|stopped), ``silent_s``, ``interval``."""
        self._update_liveness()
        now = local_clock()
        return {
            src: {
                "name": p.name,
                "state": p.state(now),
                "silent_s": now - p.last_seen,
                "interval": p.interval,
            }
            for src, p in self._publishers.items()
        }

    @property
    def alarms(self) -> list[str]:
        """Active alarms: the bus unreachable or refusing this node's keys (connecting subscribers only)."""
        return [self._link.alarm] if self._link is not None and self._link.alarm else []

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: received, delivered, malformed (+ by reason), gaps, out_of_order, heartbeats, ..."""
        states = Counter(p["state"] for p in self.publishers().values())
        return {
            **self._counts,
            "handshake_failures": self._link.handshake_failures if self._link is not None else 0,
            "malformed": sum(self._malformed.values()),
            "malformed_by_reason": dict(self._malformed),
            "publishers_alive": states["alive"],
            "publishers_stopped": states["stopped"],
            "publishers_silent": states["lost"],
        }

    # --------------------------------------------------------------- lifecycle
    def _socket(self) -> zmq.Socket:
        if self._opened is None:
            raise RuntimeError("this subscriber is closed; create a new one")
        return self._opened.socket

    @property
    def closed(self) -> bool:
        return self._opened is None

    def close(self) -> None:
        self._close_socket()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscriber {self.endpoint} topics={self.topics!r}>"
