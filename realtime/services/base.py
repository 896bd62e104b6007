"""Common lifecycle of a bus service node: a worker thread that owns one subscriber and one publisher."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from pylsl import local_clock

from brainstream.realtime.bus import DEFAULT_PUB_ENDPOINT, DEFAULT_SUB_ENDPOINT, Publisher, Subscriber
from brainstream.realtime.bus.host import host_name

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 1.0


class LatencyStats:
    """Rolling p50 / p99 of a duration in milliseconds (last ``size`` values)."""

    def __init__(self, size: int = 2000) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._values.append(ms)

    def summary(self) -> dict[str, float]:
        if not self._values:
            return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
        values = np.fromiter(self._values, dtype=np.float64)
        return {
            "n": len(values),
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
        }


class ServiceNode:
    """Base of the retrieval and generator nodes.

    Sockets are created, used and closed in the worker thread only (ZeroMQ sockets are not thread-safe).
    ``start()`` returns once they are open and re-raises what went wrong if they could not be; ``stop()``
    joins. ``run()`` starts and blocks (the CLI verbs, or a node run as its own process).
    """

    name = "node"
    topics: tuple[str, ...] = ("embedding.",)

    def __init__(
        self,
        *,
        sub_endpoint: str = DEFAULT_SUB_ENDPOINT,
        pub_endpoint: str = DEFAULT_PUB_ENDPOINT,
        keys: str | Path | None = None,
        heartbeat_interval: float | None = 1.0,
        context: Any = None,
    ) -> None:
        self.sub_endpoint = sub_endpoint
        self.pub_endpoint = pub_endpoint
        self.keys = keys
        self.heartbeat_interval = heartbeat_interval
        self.context = context
        self.alarms: list[str] = []
        self.counts: dict[str, int] = {}
        self.latency = LatencyStats()  # t_sample -> publication of this node's output
        self.compute = LatencyStats()  # time spent in the node's own work
        self.host = host_name()  # whose LSL clock local_clock() reads
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.subscriber: Subscriber | None = None
        self.publisher: Publisher | None = None
        self._last_status = 0.0
        self._bus_stats: dict[str, Any] = {}  # copied by the worker thread, which alone touches the socket
        # a standby: sockets open (no slow-joiner delay later), input drained unanswered and no heartbeats
        # until this is set (the supervisor's promotion)
        self.standby_gate: threading.Event | None = None
        self._blas_limits = None  # threadpoolctl's limits while the node holds numpy's BLAS to a budget
        self._blas_threads: int | None = None  # the widest BLAS pool once limited

    # --------------------------------------------------------------- subclass API
    def _setup(self) -> None:
        """Load models etc. in the worker thread, before the sockets open."""

    def _step(self, subscriber: Subscriber, publisher: Publisher) -> None:
        raise NotImplementedError

    def _status_stats(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ helpers
    def limit_blas(self, threads: int) -> None:
        """Hold numpy's BLAS pools to ``threads`` threads until the node closes (from ``_setup``, once every
        BLAS build it needs is loaded).

        An idle OpenBLAS worker spins for a while after each product, so a node answering 10 times a second
        with a two-thread pool keeps a second core busy between answers: the generator used 97 % of a core
        against 19 % on one thread (continuous demo, docs/benchmarks.md), and an exact search over a 20,000
        image gallery 103 % against 4 %. ``blas_threads`` in the status reads back what holds (threadpoolctl
        lets one thread at a time limit OpenBLAS).
        """
        from threadpoolctl import threadpool_info, threadpool_limits

        self._blas_limits = threadpool_limits(limits=threads, user_api="blas")
        pools = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        self._blas_threads = max(pools) if pools else None

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def alarm(self, text: str) -> None:
        log.warning("%s: %s", self.name, text)
        if text not in self.alarms:
            self.alarms = [*self.alarms[-9:], text]

    def record_latency(self, t_sample: float | None, t_start: float, host: Any = None) -> None:
        """Compute time, and sample → done when ``t_sample`` is in this host's clock (``host``: the host of
        the message's publisher; another host's times are not compared here: the session's collector reads
        them through the clock offsets, docs/lab_setup.md)."""
        now = local_clock()
        self.compute.add((now - t_start) * 1000.0)
        if t_sample is None:
            return
        if host not in (None, self.host):
            self.count("uncorrected_latencies")
            return
        self.latency.add((now - t_sample) * 1000.0)

    @property
    def stats(self) -> dict[str, Any]:
        bus = self._bus_stats
        return {
            **self.counts,
            "latency_ms": self.latency.summary(),
            "compute_ms": self.compute.summary(),
            "bus_gaps": bus.get("gaps", 0),
            "bus_malformed": bus.get("malformed", 0),
            **({"blas_threads": self._blas_threads} if self._blas_threads is not None else {}),
            **self._status_stats(),
        }

    def _publish_status(self, publisher: Publisher, state: str) -> None:
        stats = self.stats
        flat = {k: v for k, v in stats.items() if isinstance(v, int | float)}
        flat.update(
            {f"{k}_p50_ms": v["p50_ms"] for k, v in stats.items() if isinstance(v, dict) and "p50_ms" in v}
        )
        alarms = [*self.alarms, *publisher.alarms]  # the bus unreachable: seen once it is back
        publisher.publish(f"status.{self.name}", state=state, alarms=alarms, stats=flat)

    # ---------------------------------------------------------------- lifecycle
    def _serve(self) -> None:
        try:
            self._setup()
            self.subscriber = Subscriber(
                self.sub_endpoint, topics=self.topics, keys=self.keys, context=self.context
            )
            self.publisher = Publisher(
                self.pub_endpoint,
                name=self.name,
                keys=self.keys,
                heartbeat_interval=None if self.standby_gate is not None else self.heartbeat_interval,
                context=self.context,
            )
        except BaseException as exc:  # handed to start()'s caller
            self._error = exc
            self._close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._stand_by()
            while not self._stop.is_set():
                self._step(self.subscriber, self.publisher)
                self._bus_stats = self.subscriber.stats
                now = time.monotonic()
                if now - self._last_status >= STATUS_PERIOD_S:
                    self._last_status = now
                    self._publish_status(self.publisher, "running")
            self._publish_status(self.publisher, "stopped")
        except BaseException as exc:
            self._error = exc
            log.exception("%s node failed", self.name)
        finally:
            self._close()

    def _stand_by(self) -> None:
        gate = self.standby_gate
        if gate is None:
            return
        while not (gate.is_set() or self._stop.is_set()):
            self.subscriber.recv(timeout=0.05)  # the active node answers these
        if self.heartbeat_interval is not None:
            self.publisher.start_heartbeats(self.heartbeat_interval)

    def _close(self) -> None:
        for sock in (self.subscriber, self.publisher):
            if sock is not None:
                sock.close()
        limits, self._blas_limits = self._blas_limits, None
        if limits is not None:
            limits.restore_original_limits()

    def start(self):
        """Open the sockets and serve in a background thread; raises if the node cannot start."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} node already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-node", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def request_stop(self) -> None:
        """Ask the worker to end after its current step (safe from a signal handler: only sets an event)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout)

    def run(self) -> None:
        """Start (unless started) and block until the node stops (:meth:`stop` from elsewhere, or Ctrl-C)."""
        if self._thread is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.1)
        finally:
            self.stop()
        if self._error is not None:
            raise self._error

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
