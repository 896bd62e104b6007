"""Watch a running session from the bus and summarise it: windows, drops, latencies, retrieval accuracy."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pylsl


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


@dataclass
class SessionCollector:
    """Subscribe to ``embedding.*``, ``retrieval``, ``image`` and ``status.*`` and keep running statistics.

    Latencies are LSL-clock differences (docs/architecture.md §2): each stage's trace time − the
    window's ``t_sample``.
    """

    endpoint: str
    keys: str | None = None
    windows: int = 0
    ranks: list[int] = field(default_factory=list)
    n_gallery: int | None = None
    k: int | None = None
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    push_to_embedding_ms: list[float] = field(default_factory=list)
    last_status: dict[str, dict] = field(default_factory=dict)
    images: int = 0
    test_ranks: list[int] = field(default_factory=list)  # rank among the session's test images
    n_test: int | None = None
    two_way: list[float] = field(default_factory=list)  # 2-way identification of each reconstruction

    def __post_init__(self) -> None:
        from brainstream.realtime.bus import Subscriber

        self._sub = Subscriber(
            self.endpoint, topics=("embedding.", "retrieval", "image", "status."), keys=self.keys
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-collector", daemon=True)

    def start(self) -> SessionCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self._sub.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.recv(timeout=0.1)
            if msg is not None:
                self.handle(msg, pylsl.local_clock())

    def handle(self, msg, now: float) -> None:
        if msg.topic.startswith("status."):
            self.last_status[msg.topic[len("status.") :]] = dict(msg.header.get("stats") or {})
            return
        if msg.t_sample is None:
            return
        for stage, t in msg.trace or []:
            self.stage_ms.setdefault(str(stage), []).append((float(t) - msg.t_sample) * 1e3)
        if msg.topic.startswith("embedding."):
            self.windows += 1
            times = [float(t) for _, t in msg.trace or []]
            self.push_to_embedding_ms.append(((max(times) if times else now) - msg.t_sample) * 1e3)
        elif msg.topic == "retrieval":
            rank = msg.header.get("rank_of_true")
            self.k = len(msg.header.get("ids") or []) or self.k
            self.n_gallery = msg.header.get("n_gallery", self.n_gallery)
            if msg.header.get("true_image_id") is not None:
                self.ranks.append(int(rank) if rank is not None else 10**9)
            if msg.header.get("test_rank") is not None:
                self.test_ranks.append(int(msg.header["test_rank"]))
                self.n_test = int(msg.header.get("n_test") or 0) or self.n_test
        elif msg.topic == "image":
            self.images += 1
            if msg.header.get("two_way") is not None:
                self.two_way.append(float(msg.header["two_way"]))

    def retrieval_summary(self, n_gallery: int) -> dict[str, float | int | None]:
        ranks = np.asarray(self.ranks)
        k = self.k or 5

        def top(n: int) -> float | None:
            return float(np.mean(ranks < n)) if ranks.size else None

        return {
            "trials": int(ranks.size),
            "top1": top(1),
            "top5": top(5),
            "chance_top1": 1.0 / n_gallery,
            "chance_top5": min(5, n_gallery) / n_gallery,
            "k": k,
            "n_gallery": n_gallery,
        }

    def test_retrieval_summary(self) -> dict[str, float | int | None]:
        """N-way retrieval among the session's test images (N = their number), with chance."""
        ranks, n = np.asarray(self.test_ranks), self.n_test
        return {
            "trials": int(ranks.size),
            "n_way": n,
            "top1": float(np.mean(ranks < 1)) if ranks.size else None,
            "top5": float(np.mean(ranks < 5)) if ranks.size else None,
            "chance_top1": 1.0 / n if n else None,
            "chance_top5": min(5, n) / n if n else None,
        }

    def identification_summary(self) -> dict[str, float | int | None]:
        """Running 2-way identification of the reconstructions among the test images (chance 0.5)."""
        if not self.two_way:
            return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "chance": 0.5}
        from brainstream.models.reconstruction import bootstrap_ci

        return {**bootstrap_ci(np.asarray(self.two_way)), "chance": 0.5}

    def stages(self) -> dict[str, dict[str, float | None]]:
        return {stage: _pct(values) for stage, values in self.stage_ms.items()}

    def push_to_embedding(self) -> dict[str, float | None]:
        return _pct(self.push_to_embedding_ms)

    @property
    def dropped_messages(self) -> int:
        stats = self._sub.stats
        return int(stats.get("gaps", 0) or 0) + int(stats.get("malformed", 0) or 0)
