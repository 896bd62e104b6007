"""Chaos: a live session graph on a virtual subject (real processes, LSL on loopback, the real bus), each
worker node killed with SIGKILL in turn, then the signal outlet; the session must recover and say so.

Asserted: a killed decoder, retrieval or generator is replaced by its warm standby and the first window that
ended after the kill is decoded (and answered, and drawn) within 2 s; no window of a stimulus shown while
the decoder was down is lost; the session's event stream in the recording holds the restarts, the outlet's
loss, its return and the gap; the recording holds every sample the outlet pushed except while it was dead;
the summary's windows are the recording's; the whole graph stops within 3 s.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest

RECOVERY_GOAL_S = 2.0
STOP_GOAL_S = 3.0


class _Watch:
    """Every embedding, retrieval and image on the bus, with its arrival time (LSL clock)."""

    def __init__(self, endpoint: str) -> None:
        from brainstream.realtime.bus import Subscriber

        self._sub = Subscriber(endpoint, topics=("embedding.", "retrieval", "image"))
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._sub.recv(timeout=0.05)
            if msg is not None:
                topic = "embedding" if msg.topic.startswith("embedding.") else msg.topic
                entry = {"topic": topic, "src": msg.src, "t": pylsl.local_clock(), "t_sample": msg.t_sample,
                         "t_event": msg.get("t_event")}  # fmt: skip
                with self._lock:
                    self.seen.append(entry)

    def of(self, topic: str) -> list[dict]:
        with self._lock:
            return [e for e in self.seen if e["topic"] == topic]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sub.close()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.02)


def _recovery(watch: _Watch, topic: str, t_kill: float, old_srcs: set[str], timeout: float = 15.0) -> float:
    """Seconds from the kill (or from the end of the data it is about, when that came later) until the
    first message on ``topic`` from a process other than the killed one."""

    def fresh() -> list[dict]:
        return [e for e in watch.of(topic) if e["src"] not in old_srcs and e["t"] > t_kill]

    _wait(lambda: fresh(), timeout, f"a {topic} from a new {topic} process")
    first = fresh()[0]
    return first["t"] - max(t_kill, first["t_sample"] or t_kill)


@pytest.mark.timeout(400)  # under 2 minutes on a quiet 2-core machine; start-up dominates when loaded
def test_killed_nodes_recover_and_the_session_says_so(tmp_path):
    import pyxdf

    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.demo_assets import ensure_demo_assets
    from brainstream.realtime.session.demo_session import isolated_config, virtual_subject_node
    from brainstream.realtime.session.graph import SessionEvents, SessionPlan, session_nodes
    from brainstream.realtime.session.supervisor import Supervisor

    assets = ensure_demo_assets(progress=False)
    config_path = isolated_config(tmp_path)  # own ports and stream names: other sessions may run beside
    pipeline = load_pipeline_config(config_path)
    plan = SessionPlan(
        run_dir=tmp_path, config_path=config_path, checkpoint=assets.checkpoint_dir,
        gallery=assets.gallery_dir, display=False,
        extra_nodes=[virtual_subject_node(pipeline, assets, tmp_path / "logs")],
    )  # fmt: skip
    watch = _Watch(pipeline.bus.sub)
    events = SessionEvents(pipeline)
    supervisor = Supervisor(session_nodes(pipeline, plan), on_event=events, standby_delay=1.0)
    recovery: dict[str, float] = {}
    t_start = time.monotonic()
    phases: dict[str, float] = {}
    try:
        supervisor.start()
        _wait(lambda: all(watch.of(t) for t in ("embedding", "retrieval", "image")), 200, "the first answers")
        phases = {"first answers": time.monotonic()}
        standbys = ("decoder", "retrieval", "generator")
        _wait(lambda: all(supervisor.status()[n]["standby_ready"] for n in standbys), 60, "the standbys")
        phases["standbys ready"] = time.monotonic()
        for node, topic in (("decoder", "embedding"), ("retrieval", "retrieval"), ("generator", "image")):
            old = {e["src"] for e in watch.of(topic)}
            t_kill = pylsl.local_clock()
            os.kill(supervisor.pids()[node], signal.SIGKILL)
            recovery[node] = _recovery(watch, topic, t_kill, old)
        # the outlet: restarted by the supervisor (a new process, same source id); readers reconnect
        n_before = len(watch.of("embedding"))
        t_outlet_kill = pylsl.local_clock()
        os.kill(supervisor.pids()["virtual-subject"], signal.SIGKILL)
        _wait(lambda: len(watch.of("embedding")) > n_before + 1, 60, "embeddings after the outlet returned")
        recovery["outlet"] = watch.of("embedding")[n_before]["t"] - t_outlet_kill
        phases["outlet back"] = time.monotonic()
        time.sleep(1.0)
    finally:
        t_end = pylsl.local_clock()
        codes = supervisor.stop()
        watch.close()
        events.close()
    print("\nchaos recovery (s):", json.dumps({k: round(v, 3) for k, v in recovery.items()}))
    print("stop took", round(supervisor.stop_seconds, 2), "s; exit codes", codes)
    print("phases (s since start):", {k: round(v - t_start, 1) for k, v in phases.items()})

    # recovery: the first window after the kill, its answer and its image came within the goal
    for node in ("decoder", "retrieval", "generator"):
        assert recovery[node] <= RECOVERY_GOAL_S, (node, recovery)
    assert supervisor.stop_seconds <= STOP_GOAL_S + 0.5  # a loaded 2-core machine: 3 s goal, small margin
    assert all(code is not None for code in codes.values())
    reasons = {node: what for _, node, what in supervisor.events if "killed by SIGKILL" in what}
    assert set(reasons) >= {"decoder", "retrieval", "generator", "virtual-subject"}, reasons
    assert all("standby promoted" in reasons[n] for n in ("decoder", "retrieval", "generator")), reasons

    # no window of a stimulus shown around the decoder's death is lost: every event window the decoder
    # published before the outlet died has a different stimulus onset, and there is no hole in the onsets
    onsets = sorted(
        e["t_event"] for e in watch.of("embedding") if e["t_event"] and e["t_event"] < t_outlet_kill
    )
    assert len(onsets) == len(set(np.round(onsets, 4))), "a window was published twice"
    assert np.max(np.diff(onsets)) < 2.5, "a stimulus window is missing (stimuli come every 1-2 s)"

    # the recording: every sample except while the outlet was dead, the session events, the same windows
    paths = sorted(Path(tmp_path).glob("session*.xdf"))
    assert [p.name for p in paths] == ["session.xdf"]
    streams = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(paths[0], dejitter_timestamps=False)[0]}
    ts = streams[pipeline.input.signal.name]["time_stamps"]
    gaps = np.flatnonzero(np.diff(ts) > 1.5 / 1200)
    assert len(gaps) == 1, f"the recording has {len(gaps)} holes, expected one (the outlet's death)"
    hole = ts[gaps[0]], ts[gaps[0] + 1]
    assert hole[0] <= t_outlet_kill + 0.1 and hole[1] > t_outlet_kill  # the hole is the outlet's death
    assert ts[-1] >= t_end - 0.1  # recorded to the end
    log = [json.loads(v[0]) for v in streams["session-events"]["time_series"]]
    kinds = {(e.get("node"), e["kind"]) for e in log}
    for node in ("decoder", "retrieval", "generator", "virtual-subject"):
        assert (node, "restarting") in kinds, (node, sorted(kinds, key=str))
    recorder_kinds = {e["kind"] for e in log if e.get("source") == "recorder"}
    assert {"lost", "reconnected", "gap"} <= recorder_kinds, recorder_kinds
    gap = next(e for e in log if e["kind"] == "gap" and e.get("stream") == pipeline.input.signal.name)
    assert gap["missing_samples"] == pytest.approx((hole[1] - hole[0]) * 1200 - 1, abs=2)
    recorded = streams[f"bus:embedding.{pipeline.subject}"]["time_stamps"]
    assert len(recorded) == len(set(np.round(recorded, 6)))  # no window recorded twice
    on_bus = [e for e in watch.of("embedding") if e["t_sample"] <= t_end]
    assert len(recorded[recorded <= t_end]) == len(on_bus)
