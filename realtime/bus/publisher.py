"""Publisher: numbered, traced messages plus heartbeats so subscribers notice when it dies."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq
from pylsl import local_clock

from brainstream.realtime.bus._socket import (
    DEFAULT_HWM,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PUB_ENDPOINT,
    open_socket,
)
from brainstream.realtime.bus.host import host_name
from brainstream.realtime.bus.link import LINK_EVENTS, BusLink
from brainstream.realtime.bus.message import HEARTBEAT_SUFFIX, encode
from brainstream.realtime.bus.security import CurveKeys, as_keys

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 1.0


class Publisher:
    """Publish numpy arrays with a msgpack header on the bus.

    Parameters
    ----------
    endpoint : str
        Where to connect (the broker's XSUB, default ``tcp://127.0.0.1:5701``) or, with ``bind=True``,
        where to bind for direct subscribers (``inproc://`` and ``ipc://`` work too).
    name : str
        Node name; ``src`` is ``"<name>:<random hex>"``, new at every start, and heartbeats go out on
        ``status.<name>.heartbeat``.
    bind : bool
        Bind instead of connect. Binding a non-loopback interface needs ``keys``.
    keys : path | CurveKeys | None
        CURVE keys folder (``brainstream keys generate DIR``): server keys when binding, the client pair when
        connecting.
    heartbeat_interval : float | None
        Seconds between heartbeats (sent whatever the traffic, so a subscriber filtering other topics also
        hears them); ``None`` turns them off. A subscriber declares the publisher lost after 3 intervals.
    max_message_size : int
        Largest frame :meth:`publish` sends; receivers disconnect a peer that sends more (``ZMQ_MAXMSGSIZE``),
        so a bigger one is refused here with a ValueError instead.
    context : zmq.Context | None
        Defaults to the process-wide context (needed for ``inproc://``).

    Notes
    -----
    A publisher that connects over TCP watches its link to the broker (in the heartbeat thread): when no
    connection has worked for :data:`LINK_ALARM_AFTER_S` it logs a warning that says where it tried and
    keeps retrying (ZeroMQ reconnects by itself); :attr:`alarms` holds that warning until the link is back,
    and heartbeats carry it. Messages published meanwhile are dropped, not queued for later (stale windows
    would arrive all at once when the broker returns); subscribers see them as gaps in ``seq``. Every
    message and heartbeat carries the ``host`` (:func:`brainstream.realtime.bus.host.host_name`): the
    clock its times are in.

    ``seq`` counts per topic (0, 1, 2, ... on each topic), so a subscriber that filters topics still sees
    an unbroken sequence and counts only real losses. Payload arrays are sent zero-copy: do not modify an
    array after publishing it. ``publish`` never blocks: PUB drops messages no subscriber is ready for.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB_ENDPOINT,
        name: str = "publisher",
        bind: bool = False,
        *,
        keys: str | Path | CurveKeys | None = None,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        hwm: int = DEFAULT_HWM,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.Context | None = None,
    ) -> None:
        if not name or not name.isascii() or any(c.isspace() or c == "." for c in name):
            raise ValueError(
                f"name must be ASCII without spaces or dots (it becomes a topic part); got {name!r}"
            )
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0 seconds or None, got {heartbeat_interval}")
        self.endpoint = endpoint
        self.name = name
        self.src = f"{name}:{uuid.uuid4().hex[:12]}"
        self.host = host_name()
        self.heartbeat_interval = heartbeat_interval
        self.max_message_size = max_message_size
        self._seqs: dict[str, int] = {}
        self._n_sent = 0
        self._lock = (
            threading.Lock()
        )  # the heartbeat thread shares the socket; the lock is the memory barrier
        self._stop = threading.Event()
        watch = not bind and endpoint.startswith("tcp://") and heartbeat_interval is not None
        self._link = BusLink(endpoint) if watch else None
        self._opened = open_socket(
            zmq.PUB,
            endpoint,
            bind=bind,
            keys=as_keys(keys),
            context=context,
            hwm=hwm,
            monitor_events=LINK_EVENTS if watch else None,
            # while the broker is away, drop (subscribers count the gap) rather than deliver stale windows
            immediate=watch,
        )
        self._heartbeat_topic = f"status.{name}{HEARTBEAT_SUFFIX}"
        self._thread: threading.Thread | None = None
        if heartbeat_interval is not None:
            self.start_heartbeats(heartbeat_interval)

    def start_heartbeats(self, interval: float = DEFAULT_HEARTBEAT_INTERVAL) -> None:
        """Start heartbeats now (a standby node connects early, silent, and speaks up once promoted)."""
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be > 0 seconds, got {interval}")
        if self._thread is not None:
            return
        self.heartbeat_interval = interval
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"bus-heartbeat-{self.name}", daemon=True
        )
        self._thread.start()

    # ----------------------------------------------------------------- sending
    def publish(
        self,
        topic: str,
        arrays: Sequence[Any] = (),
        *,
        t_sample: float | None = None,
        trace: Sequence[Sequence[Any]] | None = None,
        space: str | None = None,
        stage: str | None = None,
        **extras: Any,
    ) -> int:
        """Send one message; return its ``seq``.

        Parameters
        ----------
        topic : str
            Dotted ASCII topic (``embedding.<subject>``, ``retrieval``, ``image``, ...).
        arrays : sequence of array-like
            Payload arrays (numeric dtypes), each sent as one frame.
        t_sample : float | None
            LSL time of the data this message is about (latency reference).
        trace : list of [stage, t] | None
            Trace received with the input; sent on extended by ``stage``.
        space : str | None
            Embedding-space id for embeddings and anything derived from them.
        stage : str | None
            If given, ``[stage, pylsl.local_clock()]`` is appended to the trace just before sending.
        **extras
            Small msgpack-able values put in the header (``event``, ``image_id``, ``ids``, ...).
        """
        if self._opened is None:
            raise RuntimeError("this publisher is closed; create a new one")
        trace = [list(item) for item in (trace or ())]
        extras.setdefault("host", self.host)
        with self._lock:
            seq = self._seqs.get(topic, 0)
            if stage is not None:
                trace.append([stage, local_clock()])
            frames = encode(
                topic,
                arrays,
                seq=seq,
                src=self.src,
                t_sample=t_sample,
                trace=trace,
                space=space,
                extras=extras,
            )
            self._check_size(frames)
            self._opened.socket.send_multipart(frames, copy=False)
            self._seqs[topic] = seq + 1
            self._n_sent += 1
        return seq

    def _check_size(self, frames: list[Any]) -> None:
        # receivers drop the whole connection on a frame over ZMQ_MAXMSGSIZE: refuse it here, loudly, instead
        biggest = max(memoryview(f).nbytes for f in frames)
        if biggest > self.max_message_size:
            raise ValueError(
                f"a {biggest}-byte frame exceeds the bus limit of {self.max_message_size} bytes "
                "(ZMQ_MAXMSGSIZE); send less per message (decimate, crop or split) or raise max_message_size "
                "on every node"
            )

    def _send_heartbeat(self, state: str) -> None:
        with self._lock:
            if self._opened is None:
                return
            topic = self._heartbeat_topic
            seq = self._seqs.get(topic, 0)
            # last seq per topic lets subscribers count messages lost after the last one they saw
            last = {t: s - 1 for t, s in self._seqs.items() if t != topic}
            frames = encode(
                topic,
                (),
                seq=seq,
                src=self.src,
                t_sample=local_clock(),
                extras={
                    "heartbeat": True,
                    "state": state,
                    "host": self.host,
                    "alarms": self.alarms,
                    "stats": {"sent": self._n_sent},
                    "interval": self.heartbeat_interval,
                    "last_seq": last,
                },
            )
            try:
                self._opened.socket.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._seqs[topic] = seq + 1

    def _heartbeat_loop(self) -> None:
        assert self.heartbeat_interval is not None
        monitor = self._opened.monitor if self._opened is not None else None
        next_beat = time.monotonic() + self.heartbeat_interval
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self._send_heartbeat("alive")
                next_beat = now + self.heartbeat_interval
            if monitor is None or self._link is None:
                self._stop.wait(max(0.0, next_beat - now))
                continue
            # the monitor socket belongs to this thread alone; short polls keep close() prompt
            if monitor.poll(int(1000 * min(0.1, max(0.0, next_beat - now)))):
                self._link.read(monitor)
            self._link.check()

    @property
    def alarms(self) -> list[str]:
        """Active alarms of this publisher: the bus unreachable or refusing its keys (else empty)."""
        link = self._link
        return [link.alarm] if link is not None and link.alarm else []

    @property
    def link(self) -> dict[str, Any]:
        """The link to the broker: ``connected``, ``reconnects``, ``handshake_failures`` (TCP only)."""
        link = self._link
        if link is None:
            return {}
        return {
            "connected": link.up,
            "reconnects": link.reconnects,
            "handshake_failures": link.handshake_failures,
        }

    # --------------------------------------------------------------- lifecycle
    @property
    def closed(self) -> bool:
        return self._opened is None

    def close(self) -> None:
        """Say goodbye (a ``stopped`` heartbeat, so subscribers do not count it as lost) and close."""
        if self._opened is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._send_heartbeat("stopped")
        with self._lock:
            opened, self._opened = self._opened, None
        opened.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Publisher {self.src} {self.endpoint} ({state})>"
