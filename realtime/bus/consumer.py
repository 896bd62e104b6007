"""A background thread that hands every message of one subscription to a handler.

The session's passive listeners (the bus recorder, the reconstruction keeper) share it: one message that
cannot be handled is counted and logged, and never ends the thread, so one odd message costs that message
and nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from brainstream.realtime.bus.message import BusMessage
from brainstream.realtime.bus.subscriber import Subscriber

logger = logging.getLogger(__name__)

RECV_TIMEOUT_S = 0.1  # how often the thread looks at its stop flag


class BusConsumer:
    """Subscribe to ``topics`` and call :meth:`handle` with each message, in a thread of its own.

    Parameters
    ----------
    endpoint : str | None
        Subscriber endpoint (default: the broker's XPUB, ``realtime.bus.DEFAULT_SUB_ENDPOINT``).
    topics : sequence of str
        Topic prefixes.
    subscriber_kwargs
        Passed to :class:`~brainstream.realtime.bus.Subscriber` (``keys``, ``context`` for ``inproc://``).

    Notes
    -----
    The subscription opens in the constructor, so that messages published between construction and
    :meth:`start` are already queued for the thread (ZeroMQ's slow joiner).
    """

    thread_name = "bus-consumer"

    def __init__(
        self, endpoint: str | None = None, topics: Sequence[str] = ("",), **subscriber_kwargs: Any
    ) -> None:
        from brainstream.realtime.bus import DEFAULT_SUB_ENDPOINT

        self.subscriber = Subscriber(
            endpoint or DEFAULT_SUB_ENDPOINT, topics=tuple(topics), **subscriber_kwargs
        )
        self.n_skipped = 0  # messages whose handling raised
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, msg: BusMessage) -> Any:
        """Deal with one message (in the consumer's thread, or directly in tests)."""
        raise NotImplementedError

    def start(self):
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} already started")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after the message in hand, then close the subscription."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.subscriber.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.subscriber.recv(timeout=RECV_TIMEOUT_S)
            if msg is None:
                continue
            try:
                self.handle(msg)
            except Exception:  # one odd message must not end the handling of the others
                self.n_skipped += 1
                logger.exception(
                    "%s: could not handle %s message seq %s", self.thread_name, msg.topic, msg.seq
                )
