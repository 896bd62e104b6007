"""Read the bus in a background thread and feed :class:`~realtime.display.state.DisplayState`.

The thread owns its ZeroMQ sockets (sockets are not thread-safe): one :class:`~realtime.bus.Subscriber`
and, optionally, one :class:`~realtime.bus.Publisher` for the display's own ``status.display`` reports
(state, alarms, and the sample→display latencies the lead's demo summary needs). Nothing here can stop the
GUI: the GUI only reads the state object, and this thread survives a dead broker (ZeroMQ reconnects by
itself), malformed frames (the subscriber drops and counts them) and bad payloads (the state counts them).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import pylsl

from brainstream.realtime.display.state import DisplayState

logger = logging.getLogger(__name__)

STATUS_TOPIC = "status.display"


class BusThread:
    """Subscribe to the bus and keep ``state`` current.

    Parameters
    ----------
    state : DisplayState
        Where every received message goes.
    endpoint : str | None
        Subscriber endpoint (the broker's XPUB); None = ``realtime.bus.DEFAULT_SUB_ENDPOINT``.
    topics : sequence of str
        Topic prefixes to receive; everything by default.
    publish_endpoint : str | None
        Where ``status.display`` reports go (the broker's XSUB; None = ``DEFAULT_PUB_ENDPOINT``); pass
        ``""`` to publish nothing.
    status_interval : float
        Seconds between ``status.display`` reports.
    poll_s : float
        Longest wait for one message before the thread checks whether it should stop.
    keys : str | None
        CURVE keys folder (``brainstream keys``) when the broker runs on another host.
    """

    def __init__(
        self,
        state: DisplayState,
        endpoint: str | None = None,
        topics: Sequence[str] = ("",),
        publish_endpoint: str | None = None,
        status_interval: float = 1.0,
        poll_s: float = 0.05,
        keys: str | None = None,
    ) -> None:
        from brainstream.realtime.bus import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT

        if isinstance(topics, str):
            raise TypeError(f"topics must be a sequence of prefixes, e.g. ({topics!r},)")
        if status_interval <= 0 or poll_s <= 0:
            raise ValueError("status_interval and poll_s must be > 0 seconds")
        self.state = state
        self.endpoint = endpoint or DEFAULT_SUB_ENDPOINT
        self.publish_endpoint = DEFAULT_PUB_ENDPOINT if publish_endpoint is None else publish_endpoint
        self.topics = tuple(topics)
        self.status_interval = status_interval
        self.poll_s = poll_s
        self.keys = keys
        self.errors = 0
        self._outbox: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- lifecycle
    def start(self) -> BusThread:
        if self._thread is not None:
            raise RuntimeError("bus thread already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="display-bus", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> BusThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(self, topic: str, **fields: Any) -> None:
        """Publish a request (e.g. ``control.decoder``) from the bus thread at its next turn (thread-safe);
        dropped with a warning when the display publishes nothing."""
        if not self.publish_endpoint:
            logger.warning("not sending %s: the display publishes nothing (no publish endpoint)", topic)
            return
        self._outbox.put((topic, fields))

    # --------------------------------------------------------------- the loop
    def _run(self) -> None:
        subscriber = publisher = None
        t_stats = t_status = 0.0
        try:
            while not self._stop.is_set():
                if subscriber is None:
                    subscriber = self._open_subscriber()
                    if subscriber is None:
                        self._stop.wait(1.0)
                        continue
                if publisher is None and self.publish_endpoint:
                    publisher = self._open_publisher()
                try:
                    messages = subscriber.drain(timeout=self.poll_s)
                except Exception as exc:  # a broken socket: start a fresh one
                    self._fail("bus receive failed", exc)
                    subscriber = self._close(subscriber)
                    continue
                t_received = pylsl.local_clock()
                for message in messages:
                    try:
                        self.state.ingest(message, t_received)
                    except Exception as exc:  # never let one message end the thread
                        self._fail(f"could not take a {getattr(message, 'topic', '?')} message", exc)
                now = time.monotonic()
                if now - t_stats >= 0.25:
                    t_stats = now
                    self._report_bus(subscriber)
                while publisher is not None and not self._outbox.empty():
                    topic, fields = self._outbox.get_nowait()
                    try:
                        publisher.publish(topic, **fields)
                    except Exception as exc:
                        self._fail(f"could not publish {topic}", exc)
                if publisher is not None and now - t_status >= self.status_interval:
                    t_status = now
                    publisher = self._publish_status(publisher)
        finally:
            self._close(subscriber)
            self._close(publisher)
            self.state.set_bus_stats({}, "stopped")

    def _open_subscriber(self) -> Any:
        from brainstream.realtime.bus import Subscriber

        try:
            return Subscriber(self.endpoint, topics=self.topics, keys=self.keys)
        except Exception as exc:
            self._fail(f"cannot subscribe to {self.endpoint}", exc)
            self.state.set_bus_stats({}, f"error: {exc}")
            return None

    def _open_publisher(self) -> Any:
        from brainstream.realtime.bus import Publisher

        try:
            publisher = Publisher(self.publish_endpoint, name="display", keys=self.keys)
            self.state.own_sources.add(publisher.src)
            return publisher
        except Exception as exc:
            self._fail(f"cannot publish status to {self.publish_endpoint}; status.display disabled", exc)
            self.publish_endpoint = ""
            return None

    def _report_bus(self, subscriber: Any) -> None:
        try:
            stats = subscriber.stats
            publishers = subscriber.publishers()
        except Exception as exc:
            self._fail("subscriber stats unavailable", exc)
            return
        lost = sorted({p["name"] for p in publishers.values() if p.get("state") == "lost"})
        alive = [p for p in publishers.values() if p.get("state") == "alive"]
        # heartbeats (ours included, looped back by the broker) prove the broker is up even when idle
        state = "connected" if alive else "no publishers"
        stats = {k: v for k, v in stats.items() if isinstance(v, int | float)}
        stats["publishers_lost_names"] = len(lost)
        self.state.set_bus_stats(stats, state, lost_publishers=lost)

    def _publish_status(self, publisher: Any) -> Any:
        try:
            publisher.publish(
                STATUS_TOPIC,
                state=self.state.display_state(),
                alarms=self.state.alarms(include_nodes=False)[:20],  # others' alarms are theirs to report
                stats=status_stats(self.state),
            )
            return publisher
        except Exception as exc:
            self._fail("could not publish status.display", exc)
            return self._close(publisher)

    def _fail(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        # the first few in full, then quietly: a flapping bus must not flood the log
        if self.errors <= 5:
            logger.warning("%s: %s", what, exc)
        else:
            logger.debug("%s: %s", what, exc)

    @staticmethod
    def _close(sock: Any) -> None:
        if sock is not None:
            try:
                sock.close()
            except Exception as exc:
                logger.debug("closing %r failed: %s", sock, exc)
        return None


def status_stats(state: DisplayState) -> dict[str, float | int]:
    """Flat numbers for ``status.display``: sample→display p50/p99 per drawn kind, fps, drops, accuracy."""
    out: dict[str, float | int] = {}
    for kind, s in state.draw_latencies().items():
        out[f"{kind}_to_display_p50_ms"] = s["p50_ms"]
        out[f"{kind}_to_display_p99_ms"] = s["p99_ms"]
        out[f"{kind}_drawn"] = s["n"]
    for kind, s in state.draw_latencies(whole_run=True).items():
        out[f"{kind}_to_display_run_p50_ms"] = s["p50_ms"]
    out["bus_to_display_p50_ms"] = state.bus_to_display()["p50_ms"]
    out["fps"] = state.fps()
    out.update({f"dropped_{k}": v for k, v in state.dropped().items()})
    acc, _ = state.accuracy()
    out["n_known"] = acc["n"]
    out["top1"] = acc["top1"]
    out["top5"] = acc["top5"]
    return out
