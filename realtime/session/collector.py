"""Watch a running session from the bus and summarise it: windows, drops, latencies, retrieval accuracy."""

from __future__ import annotations

import threading
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pylsl

from brainstream.realtime.session.clocks import HostClocks, elapsed_ms


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / max of latencies (None for each when there are none)."""
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "max": None}
    arr = np.array(values[:], dtype=np.float64)  # a copy: see SessionCollector on reading its arrays
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
    window's ``t_sample``. A trace stage ``node[.step]`` was stamped in the LSL clock of the host that
    ``node`` runs on (its status messages say which). With ``clocks`` (a split session) two stamps of
    different hosts are compared only after mapping both into this host's clock with LSL's offset
    estimates; a latency whose hosts or offsets are not known yet is not reported but counted in
    :meth:`clock_report` (``uncorrected``). Without ``clocks`` every stamp is taken as this host's (one
    machine).
    After :meth:`end` only messages about data from before the end are counted (windows finishing during
    shutdown still are; windows cut after it are not), so a summary counts what the session produced
    while it ran, the same windows as the session's recording up to that time. Windows are also counted
    per decoder process (the publisher instance ``src``): a restarted decoder starts a new run.
    Every latency and rank of the session is kept for its percentiles, as 8-byte fields in ``array``s
    (a Python float in a list takes 32 B: a continuous session's 15 values a window grew it ~24 MB/hour).
    Other threads read them through a slice (``collector.ranks[:]``, one C call under the GIL): a numpy
    view of the array itself would lock its size, and the collector's next append would fail.
    """

    endpoint: str
    keys: str | None = None
    clocks: HostClocks | None = None
    windows: int = 0
    ranks: array = field(default_factory=lambda: array("q"))
    n_gallery: int | None = None
    k: int | None = None
    stage_ms: dict[str, array] = field(default_factory=dict)
    push_to_embedding_ms: array = field(default_factory=lambda: array("d"))
    last_status: dict[str, dict] = field(default_factory=dict)
    images: int = 0
    retrievals: int = 0
    hop_ms: dict[str, array] = field(default_factory=dict)
    node_hosts: dict[str, str] = field(default_factory=dict)
    uncorrected: Counter = field(default_factory=Counter)
    t_end: float | None = None
    decoder_runs: dict[str, dict] = field(default_factory=dict)  # src -> windows, first/last t_sample
    test_ranks: array = field(default_factory=lambda: array("q"))  # rank among the session's test images
    n_test: int | None = None
    two_way: array = field(default_factory=lambda: array("d"))  # 2-way identification of each reconstruction

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
        if self._thread.is_alive():
            self._thread.join(timeout=3)
        self._sub.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.recv(timeout=0.1)
            if msg is not None:
                self.handle(msg, pylsl.local_clock())

    def end(self, t_end: float | None = None) -> None:
        """The session ends now (or at LSL time ``t_end``): later data are no longer counted."""
        self.t_end = pylsl.local_clock() if t_end is None else float(t_end)

    def handle(self, msg, now: float) -> None:
        if msg.topic.startswith("status."):
            node = msg.topic[len("status.") :]
            self.last_status[node] = dict(msg.header.get("stats") or {})
            host = msg.header.get("host")
            if isinstance(host, str) and host:
                self.node_hosts[node] = host
            return
        if msg.t_sample is None or (self.t_end is not None and msg.t_sample > self.t_end):
            return
        trace = [(str(stage), float(t)) for stage, t in msg.trace or []]
        origin = _node(trace[0][0]) if trace else None  # t_sample is in the clock of the first stage's host
        for stage, t in trace:
            ms = self._diff_ms(origin, msg.t_sample, _node(stage), t)
            if ms is None:
                self.uncorrected[stage] += 1
            else:
                _series(self.stage_ms, stage).append(ms)
        for (a, t_a), (b, t_b) in zip(trace, trace[1:], strict=False):
            if _node(a) != _node(b):  # a hop between nodes (and maybe hosts)
                hop = f"{_node(a)}->{_node(b)}"
                ms = self._diff_ms(_node(a), t_a, _node(b), t_b)
                if ms is None:
                    self.uncorrected[hop] += 1
                else:
                    _series(self.hop_ms, hop).append(ms)
        if msg.topic.startswith("embedding."):
            self.windows += 1
            run = self.decoder_runs.setdefault(msg.src, {"windows": 0, "first_t": msg.t_sample})
            run["windows"] += 1
            run["last_t"] = msg.t_sample
            times = [t for _, t in trace]
            self.push_to_embedding_ms.append(((max(times) if times else now) - msg.t_sample) * 1e3)
        elif msg.topic == "retrieval":
            self.retrievals += 1
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

    def _diff_ms(self, node_a: str | None, t_a: float, node_b: str | None, t_b: float) -> float | None:
        """``t_b - t_a`` in ms with each time read in its host's clock; None where that cannot be done."""
        if self.clocks is None or node_a == node_b:
            return (t_b - t_a) * 1e3
        hosts = self.node_hosts
        return elapsed_ms(self.clocks, hosts.get(node_a or ""), t_a, hosts.get(node_b or ""), t_b)

    def hops(self) -> dict[str, dict[str, float | None]]:
        """Latency of each hop between two nodes' trace stamps (``decoder->retrieval``, ...)."""
        return {hop: percentiles(values) for hop, values in list(self.hop_ms.items())}

    def clock_report(self) -> dict:
        """Hosts of the nodes, other hosts' clock offsets to this one (± uncertainty), and how many
        latencies were not reported because their hosts' clocks could not be related."""
        return {
            "local_host": self.clocks.local_host if self.clocks is not None else None,
            "node_hosts": dict(sorted(self.node_hosts.items())),
            "offsets": self.clocks.summary() if self.clocks is not None else {},
            "uncorrected": dict(self.uncorrected),
        }

    def retrieval_summary(self, n_gallery: int) -> dict[str, float | int | None]:
        ranks = np.array(self.ranks[:])
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

    def runs(self) -> list[dict]:
        """Windows per decoder process in start order; ``restart`` marks every run after the first."""
        return [
            {"decoder": src, "windows": r["windows"], "first_t": r["first_t"], "last_t": r.get("last_t"),
             "restart": i > 0}
            for i, (src, r) in enumerate(self.decoder_runs.items())
        ]  # fmt: skip

    def test_retrieval_summary(self) -> dict[str, float | int | None]:
        """N-way retrieval among the session's test images (N = their number), with chance."""
        ranks, n = np.array(self.test_ranks[:]), self.n_test
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
        if not len(self.two_way):
            return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "chance": 0.5}
        from brainstream.models.reconstruction import bootstrap_ci

        return {**bootstrap_ci(np.array(self.two_way[:])), "chance": 0.5}

    def stages(self) -> dict[str, dict[str, float | None]]:
        return {stage: percentiles(values) for stage, values in list(self.stage_ms.items())}

    def push_to_embedding(self) -> dict[str, float | None]:
        return percentiles(self.push_to_embedding_ms)

    @property
    def dropped_messages(self) -> int:
        stats = self._sub.stats
        return int(stats.get("gaps", 0) or 0) + int(stats.get("malformed", 0) or 0)


def _series(by_name: dict[str, array], name: str) -> array:
    """The named latency series, created on first use (not an empty array built for every message)."""
    series = by_name.get(name)
    if series is None:
        series = by_name[name] = array("d")
    return series


def _node(stage: str) -> str:
    """The node that stamped a trace stage (``decoder.encoded`` -> ``decoder``)."""
    return stage.split(".", 1)[0]
