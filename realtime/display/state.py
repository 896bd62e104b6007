"""What the display knows, independent of Qt: the newest message per topic, a scrolling signal preview per
stream, recent markers, per-stage latency over the last N seconds, running accuracy, drop counts and alarms.

The bus thread calls :meth:`DisplayState.ingest` for every message it receives; the GUI thread reads
snapshots at its own pace and reports back with :meth:`DisplayState.record_draw` when it has drawn a
retrieval or an image. Everything is guarded by one lock held only for O(1)-ish bookkeeping (the signal
history copy is O(window)), so neither side ever waits on the other for long.

Latencies are LSL seconds (``pylsl.local_clock()``) like everywhere in brainstream; they are stored and
reported in milliseconds.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pylsl

from brainstream.models.events import parse_stimulus_marker
from brainstream.realtime.bus.host import host_name
from brainstream.realtime.display.draw_log import DrawLog, ValueLog

# topics (docs/architecture.md §3); signal.<stream> and status.<node> are prefixes
RETRIEVAL = "retrieval"
IMAGE = "image"
MARKER = "marker"
SIGNAL_PREFIX = "signal."
STATUS_PREFIX = "status."
EMBEDDING_PREFIX = "embedding."
DRAW_KINDS = (RETRIEVAL, IMAGE)

# a retrieval answers the expected window end if its t_sample is within this (s); also the most the
# learned window offsets may disagree for the display to predict windows at all
EXPECT_SLACK_S = 0.02

# the display's own trace stages (what the lead's latency summary names)
STAGE_RECEIVED = "display.recv"
STAGE_DRAWN = "display.draw"

# drawn windows remembered for the whole-run summary (64 B each in a preallocated ring: 6.4 MB at the cap,
# 14 h at 2 windows/s); as many values per kind of GUI work (8 B each)
DEFAULT_RECORD_LIMIT = 100_000


class PayloadError(ValueError):
    """A well-formed bus message whose payload does not match its topic's contract."""


@dataclass
class LatestMessage:
    """The newest message of one topic, as the GUI sees it."""

    topic: str
    msg: Any  # realtime.bus.BusMessage (duck-typed: topic, header, arrays, t_sample, trace, seq, src)
    t_received: float
    version: int
    drawn: bool = False


@dataclass
class SignalView:
    """An ordered copy of one stream's recent preview samples."""

    stream: str
    data: np.ndarray  # (n_ch, n_times) float32
    timestamps: np.ndarray  # (n_times,) float64, LSL seconds
    ch_names: list[str]
    sfreq: float
    version: int


class RollingWindow:
    """Values stamped with LSL time; statistics over the last ``window_s`` seconds (bounded in count too)."""

    def __init__(self, window_s: float, maxlen: int = 20_000) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        self.window_s = float(window_s)
        self._items: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, t: float, value: float) -> None:
        self._items.append((t, value))

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._items and self._items[0][0] < horizon:
            self._items.popleft()

    def values(self, now: float) -> np.ndarray:
        self._prune(now)
        return np.fromiter((v for _, v in self._items), dtype=np.float64, count=len(self._items))

    def __len__(self) -> int:
        return len(self._items)


def describe(values: np.ndarray | Iterable[float]) -> dict[str, float | int]:
    """``n``, ``p50``, ``p99``, ``mean`` and ``max`` of latencies given in ms (NaN when empty)."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, "p50_ms": math.nan, "p99_ms": math.nan, "mean_ms": math.nan, "max_ms": math.nan}
    p50, p99 = np.percentile(arr, [50, 99])
    return {
        "n": int(arr.size),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "mean_ms": float(arr.mean()),
        "max_ms": float(arr.max()),
    }


class _SignalHistory:
    """A fixed-capacity scrolling buffer of one stream's preview samples (reset when its channels change)."""

    def __init__(self, ch_names: list[str], sfreq: float, seconds: float) -> None:
        self.ch_names = ch_names
        self.sfreq = sfreq
        self.capacity = max(16, int(math.ceil(seconds * sfreq)) + 1)
        self.data = np.zeros((len(ch_names), self.capacity), np.float32)
        self.ts = np.zeros(self.capacity, np.float64)
        self.n_written = 0
        self.version = 0

    def write(self, data: np.ndarray, ts: np.ndarray) -> None:
        n = ts.size
        if n >= self.capacity:
            data, ts, n = data[:, -self.capacity :], ts[-self.capacity :], self.capacity
        start = self.n_written % self.capacity
        first = min(n, self.capacity - start)
        self.data[:, start : start + first] = data[:, :first]
        self.ts[start : start + first] = ts[:first]
        if first < n:
            self.data[:, : n - first] = data[:, first:]
            self.ts[: n - first] = ts[first:]
        self.n_written += n
        self.version += 1

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        n = min(self.n_written, self.capacity)
        idx = (np.arange(self.n_written - n, self.n_written)) % self.capacity
        return self.data[:, idx], self.ts[idx]


@dataclass
class NodeStatus:
    """The newest ``status.<node>`` report."""

    node: str
    state: str
    alarms: list[str]
    stats: dict[str, Any]
    t_received: float
    host: str | None = None  # where the node runs (status messages carry it)


@dataclass
class _TopicCounts:
    received: int = 0
    invalid: int = 0
    superseded: int = 0  # replaced by a newer message before the GUI drew it
    drawn: int = 0


@dataclass
class Accuracy:
    """Running top-1 / top-5 over retrievals whose true image is known."""

    n: int = 0
    top1: int = 0
    top5: int = 0
    history: deque = field(default_factory=lambda: deque(maxlen=2000))  # (n, top1 rate, top5 rate)

    def add(self, rank: int | None) -> None:
        self.n += 1
        if rank is not None and rank == 0:
            self.top1 += 1
        if rank is not None and 0 <= rank < 5:
            self.top5 += 1
        self.history.append((self.n, self.top1 / self.n, self.top5 / self.n))

    # among the session's test images (N-way, as papers report retrieval) and the reconstructions' 2-way
    test_n: int = 0
    test_top1: int = 0
    test_top5: int = 0
    n_test: int | None = None
    two_way_n: int = 0
    two_way_sum: float = 0.0

    def add_test(self, rank: int, n_test: int | None) -> None:
        self.test_n += 1
        self.test_top1 += rank == 0
        self.test_top5 += 0 <= rank < 5
        self.n_test = n_test or self.n_test

    def add_two_way(self, score: float) -> None:
        self.two_way_n += 1
        self.two_way_sum += score

    def as_dict(self) -> dict[str, float | int]:
        rate = (lambda k: k / self.n) if self.n else (lambda k: math.nan)
        test = (lambda k: k / self.test_n) if self.test_n else (lambda k: math.nan)
        return {
            "n": self.n,
            "top1": rate(self.top1),
            "top5": rate(self.top5),
            "test_n": self.test_n,
            "n_test": self.n_test or 0,
            "test_top1": test(self.test_top1),
            "test_top5": test(self.test_top5),
            "two_way_n": self.two_way_n,
            "two_way": self.two_way_sum / self.two_way_n if self.two_way_n else math.nan,
        }


class DisplayState:
    """Thread-safe model behind the live display.

    Parameters
    ----------
    latency_window_s : float
        Per-stage latency percentiles are computed over this many most recent seconds.
    signal_seconds : float
        Seconds of signal preview kept per stream (what the traces panel scrolls through).
    silence_alarm_s : float
        No bus message for this long raises an alarm; a stream or node silent this long is flagged too.
    clock : callable
        Returns LSL seconds; ``pylsl.local_clock`` by default.
    record_limit : int
        Drawn windows (of every kind together) remembered for :meth:`draw_records` and the whole-run
        summary, and values per kind of GUI work (oldest dropped; :mod:`~brainstream.realtime.display.
        draw_log`).
    clocks : HostClocks | None
        Other hosts' LSL clock offsets (:class:`~brainstream.realtime.session.clocks.HostClocks`; a session
        split across machines). Without them, a latency whose two times come from different hosts' clocks
        is not taken (counted in ``uncorrected_latencies``); with them it is read in this host's clock.
    """

    def __init__(
        self,
        latency_window_s: float = 10.0,
        signal_seconds: float = 10.0,
        silence_alarm_s: float = 3.0,
        clock: Callable[[], float] = pylsl.local_clock,
        record_limit: int = DEFAULT_RECORD_LIMIT,
        clocks: Any = None,
    ) -> None:
        if record_limit < 1:
            raise ValueError(f"record_limit must be >= 1, got {record_limit}")
        if signal_seconds <= 0:
            raise ValueError(f"signal_seconds must be > 0, got {signal_seconds}")
        self.latency_window_s = float(latency_window_s)
        self.signal_seconds = float(signal_seconds)
        self.silence_alarm_s = float(silence_alarm_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._version = 0
        self._latest: dict[str, LatestMessage] = {}
        self._signals: dict[str, _SignalHistory] = {}
        self._markers: deque[tuple[float, str, int]] = deque(maxlen=256)
        self._n_markers = 0
        self._marker_version = 0
        self._nodes: dict[str, NodeStatus] = {}
        self._counts: dict[str, _TopicCounts] = {}
        self._stages: dict[str, RollingWindow] = {}
        self._seen_trace: OrderedDict[tuple[str, float], None] = OrderedDict()
        self._draw_recent = {k: RollingWindow(latency_window_s) for k in DRAW_KINDS}
        self._hop = RollingWindow(latency_window_s)
        self._accuracy = Accuracy(history=deque(maxlen=min(2000, record_limit)))
        self._last_error = ""
        self._t_last_error = -math.inf
        self.own_sources: set[str] = set()  # our own status.display publishers: their alarms are ours already
        self._errors = 0
        self._bus_stats: dict[str, Any] = {}
        self._bus_state = "starting"
        self._t_last_message = math.nan
        self._t_start = clock()
        self._frames: deque[float] = deque(maxlen=240)
        self._n_frames = 0
        self._display_state = "running"
        self._lost_publishers: list[str] = []
        self._draw_log = DrawLog(record_limit)  # the whole run's drawn windows, in memory that stops growing
        self._t_embedding = -math.inf  # receipt of the newest embedding and retrieval (LSL s)
        self._t_retrieval = -math.inf
        self._offsets: deque[float] = deque(maxlen=12)  # window end - marker onset, of recent windows
        self._expected: deque[float] = deque(maxlen=64)  # t_sample of retrievals not yet received
        self._work: dict[str, ValueLog] = {}
        self._work_limit = record_limit
        self._listeners: list[Callable[[str], None]] = []
        self.host = host_name()
        self.clocks = clocks
        self._uncorrected = 0  # latencies not taken: two hosts' times without a known offset between them

    # ------------------------------------------------------------------ bus thread side
    def ingest(self, msg: Any, t_received: float | None = None) -> bool:
        """Take one bus message; returns False (and counts it) when its payload breaks the topic contract."""
        t = self.clock() if t_received is None else t_received
        topic = str(getattr(msg, "topic", ""))
        ok = self._ingest(topic, msg, t)
        if ok and (topic in DRAW_KINDS or topic.startswith((SIGNAL_PREFIX, EMBEDDING_PREFIX))):
            for listener in list(self._listeners):
                try:
                    listener(topic)
                except Exception as exc:  # a closed window must not break the bus thread
                    self._last_error = f"listener failed: {exc}"
        return ok

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(topic)`` (from the bus thread) when a retrieval, image, embedding or signal chunk
        arrived (an embedding announces its retrieval a few ms ahead)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _ingest(self, topic: str, msg: Any, t: float) -> bool:
        with self._lock:
            # a misbehaving publisher must not grow the tables without bound
            key = topic if topic in self._counts or len(self._counts) < 64 else "(other topics)"
            counts = self._counts.setdefault(key, _TopicCounts())
            counts.received += 1
            self._t_last_message = t
            try:
                self._ingest_locked(topic, msg, t, counts)
            except (PayloadError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
                counts.invalid += 1
                self._errors += 1
                self._last_error = f"{topic}: {exc}"
                self._t_last_error = t
                return False
        return True

    def _ingest_locked(self, topic: str, msg: Any, t: float, counts: _TopicCounts) -> None:
        header = msg.header
        if not isinstance(header, dict):
            raise PayloadError(f"header must be a map, got {type(header).__name__}")
        t_sample = _finite_or_none(header.get("t_sample"))
        if topic.startswith(SIGNAL_PREFIX):
            self._ingest_signal(topic[len(SIGNAL_PREFIX) :], msg)
        elif topic == RETRIEVAL:
            rank = _check_retrieval(msg)
            if header.get("true_image_id") is not None:
                self._accuracy.add(rank)
            test_rank = header.get("test_rank")
            if isinstance(test_rank, int) and not isinstance(test_rank, bool):
                n_test = header.get("n_test")
                self._accuracy.add_test(test_rank, n_test if isinstance(n_test, int) else None)
        elif topic == IMAGE:
            _check_image(msg)
            two_way = _finite_or_none(header.get("two_way"))
            if two_way is not None:
                self._accuracy.add_two_way(two_way)
        elif topic == MARKER:
            value = header.get("value")
            if not isinstance(value, str):
                raise PayloadError(f"marker 'value' must be a string, got {type(value).__name__}")
            t_marker = t_sample if t_sample is not None else t
            self._markers.append((t_marker, value, self._n_markers))
            self._n_markers += 1
            self._marker_version += 1
            offset = self._window_offset()
            if offset is not None:  # event-locked windows: this marker's retrieval comes at a known time
                self._expected.append(t_marker + offset)
        elif topic.startswith(STATUS_PREFIX):
            self._ingest_status(topic[len(STATUS_PREFIX) :], header, t)
        self._ingest_trace(header.get("trace"), t_sample, t, origin=_src_node(header))
        if topic.startswith(EMBEDDING_PREFIX):
            self._t_embedding = t
            self._learn_window_offset(header.get("event"), t_sample)
        elif topic == RETRIEVAL:
            self._t_retrieval = t
            if t_sample is not None:  # answered: forget what it was expected for
                while self._expected and self._expected[0] <= t_sample + EXPECT_SLACK_S:
                    self._expected.popleft()
        if topic.startswith(SIGNAL_PREFIX):
            return  # signals accumulate in their history; the newest chunk alone is of no use
        old = self._latest.get(topic)
        if old is not None and not old.drawn and topic in DRAW_KINDS:
            counts.superseded += 1
        if old is None and len(self._latest) >= 64:
            return
        self._version += 1
        self._latest[topic] = LatestMessage(topic, msg, t, self._version)

    def _learn_window_offset(self, event: Any, t_sample: float | None) -> None:
        # an embedding names the marker its window is locked to: window end - onset is the offset
        if not isinstance(event, str) or t_sample is None:
            return
        for t_marker, value, _ in reversed(self._markers):
            if value == event and t_marker <= t_sample:
                if t_sample - t_marker < 30.0:
                    self._offsets.append(t_sample - t_marker)
                return

    def _window_offset(self) -> float | None:
        """Window end - marker onset, when the last windows agree on it (event-locked decoding)."""
        if len(self._offsets) < 3:
            return None
        offsets = np.asarray(self._offsets)
        if offsets.max() - offsets.min() > EXPECT_SLACK_S:
            return None  # not event-locked (or the design changed): predict nothing
        return float(np.median(offsets))

    def _ingest_signal(self, stream: str, msg: Any) -> None:
        arrays = msg.arrays
        if len(arrays) != 2:
            raise PayloadError(f"expected 2 arrays (data, timestamps), got {len(arrays)}")
        data, ts = np.asarray(arrays[0]), np.asarray(arrays[1])
        if data.ndim != 2 or ts.ndim != 1 or data.shape[1] != ts.size:
            raise PayloadError(
                f"expected (n_ch, n) data and (n,) timestamps, got {data.shape} and {ts.shape}"
            )
        if not np.issubdtype(data.dtype, np.floating) or not np.issubdtype(ts.dtype, np.floating):
            raise PayloadError(f"expected float data and timestamps, got {data.dtype} and {ts.dtype}")
        n_ch = data.shape[0]
        names = msg.header.get("ch_names")
        if names is None:
            names = [f"ch{i}" for i in range(n_ch)]
        if not isinstance(names, list | tuple) or len(names) != n_ch:
            raise PayloadError(f"ch_names must list {n_ch} names")
        names = [str(n) for n in names]
        sfreq = msg.header.get("sfreq")
        if not isinstance(sfreq, int | float) or not 0 < sfreq < 1e6:
            raise PayloadError(f"sfreq must be a positive number, got {sfreq!r}")
        hist = self._signals.get(stream)
        if hist is None and len(self._signals) >= 16:
            raise PayloadError("more than 16 signal streams; ignoring new ones")
        if hist is None or hist.ch_names != names or hist.sfreq != float(sfreq):
            old_version = hist.version if hist is not None else 0
            hist = _SignalHistory(names, float(sfreq), self.signal_seconds)
            hist.version = old_version  # versions only grow, so a reset is never mistaken for a drawn frame
            self._signals[stream] = hist
        hist.write(data.astype(np.float32, copy=False), ts.astype(np.float64, copy=False))

    def _ingest_status(self, node: str, header: dict, t: float) -> None:
        state, alarms, stats = header.get("state", ""), header.get("alarms") or [], header.get("stats") or {}
        if not isinstance(alarms, list | tuple) or not isinstance(stats, dict):
            raise PayloadError("status needs 'alarms' as a list and 'stats' as a map")
        if node not in self._nodes and len(self._nodes) >= 64:
            raise PayloadError("more than 64 status nodes; ignoring new ones")
        if header.get("src") in self.own_sources:
            alarms = []
        host = header.get("host")
        host = host[:64] if isinstance(host, str) and host else None
        self._nodes[node] = NodeStatus(
            node, str(state), [str(a) for a in alarms][:20], dict(stats), t, host=host
        )

    def _host_of(self, node: str | None) -> str | None:
        if node == STAGE_RECEIVED.split(".")[0]:
            return self.host
        status = self._nodes.get(node or "")
        return status.host if status is not None else None

    def _elapsed_ms(self, node_a: str | None, t_a: float, node_b: str | None, t_b: float) -> float | None:
        """``t_b - t_a`` in ms, each time read in its node's host clock (a node whose host is not known yet
        counts as this host's, as on one machine); None while another host's clock offset is unknown (the
        latency is then not taken)."""
        from brainstream.realtime.session.clocks import elapsed_ms

        host_a, host_b = self._host_of(node_a) or self.host, self._host_of(node_b) or self.host
        return elapsed_ms(self.clocks, host_a, t_a, host_b, t_b)

    def _ingest_trace(self, trace: Any, t_sample: float | None, t: float, origin: str | None = None) -> None:
        if t_sample is None:
            return
        entries = list(trace) if isinstance(trace, list | tuple) else []
        stamped = [
            (str(e[0]), x)
            for e in entries
            if isinstance(e, list | tuple) and len(e) == 2 and (x := _finite_or_none(e[1])) is not None
        ]
        origin = _trace_origin(entries) or origin  # t_sample is in the clock of the first stage's host
        if stamped:  # from the last upstream stamp to our receipt: the bus hop plus our own queueing
            last_stage, last = max(stamped, key=lambda e: e[1])
            ms = self._elapsed_ms(_stage_node(last_stage), last, _stage_node(STAGE_RECEIVED), t)
            if ms is None:
                self._uncorrected += 1
            else:
                self._hop.add(t, ms)
        entries.append((STAGE_RECEIVED, t))
        for entry in entries:
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                continue
            stage, t_stage = str(entry[0]), _finite_or_none(entry[1])
            if t_stage is None:
                continue
            # a retrieval's trace repeats its embedding's stages: count each (stage, time) once
            key = (stage, t_stage)
            if stage != STAGE_RECEIVED:
                if key in self._seen_trace:
                    continue
                self._seen_trace[key] = None
                if len(self._seen_trace) > 1024:  # a retrieval follows its embedding within moments
                    self._seen_trace.popitem(last=False)
            ms = self._elapsed_ms(origin, t_sample, _stage_node(stage), t_stage)
            if ms is None:
                self._uncorrected += 1
                continue
            window = self._stages.get(stage)
            if window is None:
                if len(self._stages) >= 64:
                    continue  # a misbehaving node must not grow the table without bound
                window = self._stages[stage] = RollingWindow(self.latency_window_s)
            window.add(t, ms)

    def set_bus_stats(self, stats: dict[str, Any], state: str, lost_publishers: Iterable[str] = ()) -> None:
        """The bus thread's view of its subscriber: counters, a state word, publishers gone silent."""
        with self._lock:
            self._bus_stats = dict(stats)
            self._bus_state = state
            self._lost_publishers = list(lost_publishers)[:20]

    # ------------------------------------------------------------------ GUI thread side
    def retrieval_due(self, within_s: float, lead_s: float = 0.0) -> bool:
        """Whether a retrieval is about to arrive, so the GUI should hold back work that can wait.

        True when an embedding came in the last ``within_s`` seconds and its retrieval has not (the
        retrieval node answers within milliseconds), or, with event-locked windows, when the window of a
        marker ends within ``lead_s`` seconds or ended less than ``within_s`` ago and its retrieval has
        not come: the window's end is the marker's onset plus an offset learned from the last windows.
        """
        now = self.clock()
        with self._lock:
            if self._t_embedding > self._t_retrieval and now - self._t_embedding < within_s:
                return True
            while self._expected and self._expected[0] < now - within_s:
                self._expected.popleft()  # never answered (a skipped window): stop waiting
            return bool(self._expected) and self._expected[0] - lead_s <= now

    def latest(self, topic: str) -> LatestMessage | None:
        with self._lock:
            return self._latest.get(topic)

    def signal_streams(self) -> list[str]:
        with self._lock:
            return sorted(self._signals)

    def signal_version(self, stream: str) -> int | None:
        """Bumped by every chunk of ``stream`` (None: no such stream); cheaper than a :meth:`signal_view`."""
        with self._lock:
            hist = self._signals.get(stream)
            return None if hist is None else hist.version

    def marker_version(self) -> tuple[int, float]:
        """Markers received so far and the time of the newest: changes whenever :meth:`markers` does."""
        with self._lock:
            return self._n_markers, self._markers[-1][0] if self._markers else 0.0

    def signal_view(self, stream: str) -> SignalView | None:
        with self._lock:
            hist = self._signals.get(stream)
            if hist is None:
                return None
            data, ts = hist.read()
            return SignalView(stream, data, ts, list(hist.ch_names), hist.sfreq, hist.version)

    def markers(self, since: float = -math.inf) -> list[tuple[float, str, str, int]]:
        """``(t, value, label, n)`` of recent markers at or after ``since``, oldest first.

        ``label``: the image id for stimulus markers (else the value); ``n``: markers counted since start.
        """
        with self._lock:
            items = [m for m in self._markers if m[0] >= since]
        out = []
        for t, value, n in items:
            event = parse_stimulus_marker(value)
            out.append((t, value, event.image_id if event else value, n))
        return out

    def record_draw(
        self,
        topic: str,
        latest: LatestMessage,
        t_drawn: float | None = None,
        t_started: float | None = None,
    ) -> float | None:
        """Note that ``latest`` is on screen now; returns sample→display in ms (None without t_sample).

        ``t_drawn``: when its pixels were painted (now by default); ``t_started``: when the GUI thread
        began drawing it (so a record tells queueing from drawing).
        """
        t = self.clock() if t_drawn is None else t_drawn
        with self._lock:
            if latest.drawn:
                return None
            latest.drawn = True
            self._counts.setdefault(topic, _TopicCounts()).drawn += 1
            t_sample = _finite_or_none(latest.msg.header.get("t_sample"))
            if t_sample is None or topic not in DRAW_KINDS:
                return None
            header = latest.msg.header
            origin = _trace_origin(header.get("trace")) or _src_node(header)
            ms = self._elapsed_ms(origin, t_sample, _stage_node(STAGE_RECEIVED), t)
            if ms is None:
                self._uncorrected += 1
                return None
            self._draw_recent[topic].add(t, ms)
            image_id = header.get("true_image_id") if topic == RETRIEVAL else header.get("image_id")
            self._draw_log.add(
                topic,
                header.get("src"),
                header.get("seq"),
                t_sample,
                t,
                image_id,
                latest.t_received,
                t if t_started is None else t_started,
            )
            return ms

    def recent_draws(self, seconds: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per drawn kind, ``(t_drawn, sample→display ms)`` of the last ``seconds`` (for the latency plot)."""
        horizon = self.clock() - seconds
        with self._lock:
            return self._draw_log.since(horizon, DRAW_KINDS)

    def draw_records(self) -> list[dict[str, Any]]:
        """One row per drawn retrieval / image: when it was sampled, received, began to be drawn and was drawn
        (LSL seconds)."""
        with self._lock:
            return self._draw_log.records()

    def record_work(self, kind: str, ms: float) -> None:
        """The GUI thread spent ``ms`` on one piece of work of ``kind`` (a trace frame, the numbers, a draw).

        The GUI thread holds the GIL while it paints, so this is also how long the bus thread (and any
        retrieval waiting to be drawn) could be held up by it.
        """
        with self._lock:
            work = self._work.get(kind)
            if work is None:
                if len(self._work) >= 32:
                    return
                work = self._work[kind] = ValueLog(self._work_limit)
            work.add(ms, self.clock())

    def gui_work(self) -> dict[str, dict[str, float | int]]:
        """Per kind of GUI work, the duration of each piece (ms) over the run: n, p50, p99, mean, max."""
        with self._lock:
            work = {k: v.values() for k, v in self._work.items()}
        return {k: describe(v) for k, v in sorted(work.items())}

    def record_frame(self, t: float | None = None) -> None:
        """A trace frame was drawn (what :meth:`fps` counts)."""
        with self._lock:
            self._frames.append(self.clock() if t is None else t)
            self._n_frames += 1

    def node_statuses(self) -> list[NodeStatus]:
        with self._lock:
            return sorted(self._nodes.values(), key=lambda s: s.node)

    def accuracy(self) -> tuple[dict[str, float | int], list[tuple[int, float, float]]]:
        with self._lock:
            return self._accuracy.as_dict(), list(self._accuracy.history)

    def stage_latencies(self) -> dict[str, dict[str, float | int]]:
        """Per-stage latency (trace time − t_sample) over the last ``latency_window_s``, ordered by median."""
        now = self.clock()
        with self._lock:
            stats = {stage: describe(w.values(now)) for stage, w in self._stages.items()}
        stats = {k: v for k, v in stats.items() if v["n"]}
        return dict(sorted(stats.items(), key=lambda kv: kv[1]["p50_ms"]))

    def bus_to_display(self) -> dict[str, float | int]:
        """Last trace stamp → received by the display, over the last ``latency_window_s`` (ms).

        This is what the display (and the hop to it) adds; it stays small unless the display falls behind.
        """
        now = self.clock()
        with self._lock:
            return describe(self._hop.values(now))

    def draw_latencies(self, whole_run: bool = False) -> dict[str, dict[str, float | int]]:
        """Sample→display latency per drawn kind (``retrieval``, ``image``): recent window or whole run."""
        now = self.clock()
        with self._lock:
            if whole_run:
                return {k: describe(self._draw_log.latencies_ms(k)) for k in DRAW_KINDS}
            return {k: describe(self._draw_recent[k].values(now)) for k in DRAW_KINDS}

    def fps(self) -> float:
        with self._lock:
            if len(self._frames) < 2:
                return 0.0
            span = self._frames[-1] - self._frames[0]
            return (len(self._frames) - 1) / span if span > 0 else 0.0

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {k: vars(c).copy() for k, c in sorted(self._counts.items())}

    def dropped(self) -> dict[str, int]:
        """Messages lost: bus gaps and malformed frames (subscriber), bad payloads and undrawn supersedes."""
        with self._lock:
            bus = self._bus_stats
            out = {
                "bus_gaps": _int_stat(bus, ("gaps", "dropped", "missed")),
                "bus_malformed": _int_stat(bus, ("malformed", "invalid", "rejected")),
                "invalid_payload": sum(c.invalid for c in self._counts.values()),
                "superseded": sum(c.superseded for c in self._counts.values()),
            }
            # what upstream nodes report they skipped (e.g. the generator renders only the newest)
            out["upstream_skipped"] = sum(
                _int_stat(s.stats, ("skipped", "dropped")) for s in self._nodes.values()
            )
            return out

    def alarms(self, include_nodes: bool = True) -> list[str]:
        """Current alarms: silent bus / streams / nodes, and (``include_nodes``) what nodes report."""
        now = self.clock()
        out: list[str] = []
        with self._lock:
            if self._bus_state not in ("connected", "starting"):
                out.append(f"bus: {self._bus_state}")
            out.extend(f"{name}: publisher lost (no heartbeat)" for name in self._lost_publishers)
            silent = now - (self._t_last_message if math.isfinite(self._t_last_message) else self._t_start)
            if silent > self.silence_alarm_s:
                out.append(f"no bus messages for {silent:.0f} s")
            for stream, hist in self._signals.items():
                last = hist.ts[(hist.n_written - 1) % hist.capacity] if hist.n_written else math.nan
                if math.isfinite(last) and now - last > self.silence_alarm_s:
                    out.append(f"signal.{stream} stalled ({now - last:.0f} s)")
            for node in self._nodes.values():
                if now - node.t_received > self.silence_alarm_s * 2:
                    out.append(f"{node.node}: no status for {now - node.t_received:.0f} s")
                if include_nodes:
                    out.extend(f"{node.node}: {a}" for a in node.alarms)
            if now - self._t_last_error < 10 * self.silence_alarm_s:
                out.append(f"last bad message: {self._last_error}"[:160])
        return out

    def set_display_state(self, state: str) -> None:
        with self._lock:
            self._display_state = state

    def display_state(self) -> str:
        with self._lock:
            return self._display_state

    def bus_state(self) -> tuple[str, dict[str, Any]]:
        with self._lock:
            return self._bus_state, dict(self._bus_stats)

    def summary(self) -> dict[str, Any]:
        """Everything the lead's demo summary needs, JSON-ready (NaN where nothing was measured)."""
        acc, _ = self.accuracy()
        bus_state, bus_stats = self.bus_state()
        with self._lock:
            n_frames = self._n_frames
        return {
            "sample_to_display": self.draw_latencies(whole_run=True),
            "sample_to_display_recent": self.draw_latencies(),
            "stages": self.stage_latencies(),
            "bus_to_display": self.bus_to_display(),
            "accuracy": acc,
            "messages": self.counts(),
            "dropped": self.dropped(),
            "alarms": self.alarms(),
            "bus": {"state": bus_state, **{k: v for k, v in bus_stats.items() if _is_number(v)}},
            "frames": {"n": n_frames, "fps": self.fps()},
            "gui_work_ms": self.gui_work(),
            "uptime_s": self.clock() - self._t_start,
            "uncorrected_latencies": self._uncorrected,
        }


def _stage_node(stage: str) -> str:
    return stage.split(".", 1)[0]


def _trace_origin(trace: Any) -> str | None:
    """The node of a trace's first stage (whose host's clock ``t_sample`` is in), if there is one."""
    if isinstance(trace, list | tuple) and trace:
        first = trace[0]
        if isinstance(first, list | tuple) and len(first) == 2:
            return _stage_node(str(first[0]))
    return None


def _src_node(header: dict) -> str | None:
    src = header.get("src")
    return src.rsplit(":", 1)[0] if isinstance(src, str) and src else None


# ---------------------------------------------------------------------- payload checks
def _check_retrieval(msg: Any) -> int | None:
    """Validate a ``retrieval`` message; returns the rank of the true image (None when not known/found)."""
    if len(msg.arrays) != 1 or np.asarray(msg.arrays[0]).ndim != 1:
        raise PayloadError("retrieval needs one 1-d scores array")
    k = np.asarray(msg.arrays[0]).size
    ids = msg.header.get("ids")
    if not isinstance(ids, list | tuple) or len(ids) != k:
        raise PayloadError(f"retrieval 'ids' must list {k} ids (one per score)")
    paths = msg.header.get("paths")
    if paths is not None and (not isinstance(paths, list | tuple) or len(paths) != k):
        raise PayloadError(f"retrieval 'paths' must list {k} paths")
    rank = msg.header.get("rank_of_true")
    true_id = msg.header.get("true_image_id")
    if rank is None and true_id is not None and true_id in ids:
        rank = list(ids).index(true_id)
    if rank is not None and not isinstance(rank, int):
        raise PayloadError(f"rank_of_true must be an int or None, got {rank!r}")
    return rank


def _check_image(msg: Any) -> None:
    if len(msg.arrays) != 1:
        raise PayloadError(f"image needs exactly one array, got {len(msg.arrays)}")
    img = np.asarray(msg.arrays[0])
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise PayloadError(f"image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_stat(stats: Any, keys: tuple[str, ...]) -> int:
    if not isinstance(stats, dict):
        return 0
    total = 0
    for key in keys:
        value = stats.get(key)
        if _is_number(value):
            total += int(value)
    return total
