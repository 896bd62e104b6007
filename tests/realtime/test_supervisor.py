"""The supervisor runs real child processes: a crashing node is restarted, stop() ends everything."""

from __future__ import annotations

import sys
import time

import pytest

from brainstream.realtime.session.supervisor import NodeSpec, Supervisor


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# a node that fails the way real ones do: a traceback, then liblsl's INFO lines as the process winds down
CRASH = """
import sys
try:
    raise ValueError("boom: bad config")
except ValueError:
    import traceback; traceback.print_exc()
print("2026-12-05 08:10:59.620 (   2.755s) [        E7034B80]   api_config.cpp:126   INFO| Loaded",
      file=sys.stderr)
sys.exit(3)
"""


def test_a_node_that_is_not_restarted_and_ends_cleanly_finishes_rather_than_fails():
    done = [sys.executable, "-c", "print('shown for its seconds')"]
    broken = [sys.executable, "-c", "import sys; sys.exit(2)"]
    seen: list[tuple[str, str]] = []
    nodes = [NodeSpec("display", done, restart=False), NodeSpec("once", broken, restart=False)]
    sup = Supervisor(nodes, poll_interval=0.05, on_event=lambda node, kind, _: seen.append((node, kind)))
    with sup:
        assert _wait(lambda: sup.status()["display"]["finished"] and sup.status()["once"]["failed"])
        status = sup.status()
        assert not status["display"]["failed"] and not status["once"]["finished"]
    assert ("display", "finished") in seen and ("display", "failed") not in seen
    assert ("once", "failed") in seen


def test_end_node_asks_one_node_to_finish_and_leaves_the_others_running(tmp_path):
    # a display-like node: on SIGINT it writes its summary and exits 0, as `brainstream display` does
    summary = tmp_path / "summary.json"
    display = [sys.executable, "-c", (
        "import signal, sys, time, pathlib\n"
        "def end(*_):\n"
        f"    pathlib.Path({str(summary)!r}).write_text('{{}}'); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, end)\n"
        f"pathlib.Path({str(tmp_path / 'ready')!r}).touch()\n"
        "time.sleep(60)\n"
    )]  # fmt: skip
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup = Supervisor([NodeSpec("display", display, restart=False), NodeSpec("decoder", sleeper)])
    with sup:
        assert _wait((tmp_path / "ready").exists)  # its handler is installed
        assert sup.end_node("display")
        assert _wait(lambda: sup.status()["display"]["finished"])
        assert summary.exists()
        assert sup.status()["decoder"]["alive"] and not sup.status()["display"]["failed"]
        assert not sup.end_node("display")  # already ended: nothing to ask
        with pytest.raises(ValueError, match="no node named 'screen'"):
            sup.end_node("screen")


def test_crashed_node_is_restarted_with_reason(tmp_path):
    crash = [sys.executable, "-c", CRASH]
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup = Supervisor(
        [NodeSpec("crasher", crash, max_restarts=2), NodeSpec("sleeper", sleeper)], poll_interval=0.05
    )
    with sup:
        assert _wait(lambda: sup.status()["crasher"]["failed"])
        status = sup.status()
        assert status["crasher"]["restarts"] == 2
        assert status["sleeper"]["alive"]
    reasons = [what for _, node, what in sup.events if node == "crasher" and "exited" in what]
    assert len(reasons) == 3
    # the reason is the exception line, not the last lines of stderr
    assert all(r.startswith("exited with code 3: ValueError: boom: bad config;") for r in reasons), reasons
    assert not any("INFO" in r for r in reasons)
    assert not sup.status()["sleeper"]["alive"]


def test_stop_interrupts_then_kills(tmp_path):
    # each child says when its handlers are in place: on a loaded machine interpreter start-up alone can take
    # longer than any fixed sleep, and a signal that comes before the handler tests nothing
    stubborn = [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path(sys.argv[1]).touch(); time.sleep(60)",
        str(tmp_path / "stubborn.ready"),
    ]
    polite = [
        sys.executable,
        "-c",
        # its SIGINT handler installed explicitly, as every node's is: a test run in the background has
        # SIGINT ignored, and children inherit that
        "import pathlib, signal, sys, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "try:\n    pathlib.Path(sys.argv[1]).touch()\n    time.sleep(60)\n"
        "except KeyboardInterrupt:\n    pass",
        str(tmp_path / "polite.ready"),
    ]
    sup = Supervisor([NodeSpec("stubborn", stubborn), NodeSpec("polite", polite)]).start()
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"{n}.ready").exists() for n in ("stubborn", "polite")):
        assert time.monotonic() < deadline, "the child processes did not start within 30 s"
        time.sleep(0.05)
    codes = sup.stop(timeout=2.0)
    assert codes["polite"] == 0  # ended cleanly on SIGINT
    assert codes["stubborn"] == -9  # ignored SIGINT and SIGTERM, was killed


def test_unique_names_required():
    import pytest

    with pytest.raises(ValueError, match="unique"):
        Supervisor([NodeSpec("a", ["true"]), NodeSpec("a", ["true"])])


def test_last_error_line_skips_liblsl_chatter():
    from brainstream.realtime.session.supervisor import exit_reason, last_error_line

    lines = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "onnxruntime.capi.onnxruntime_pybind11_state.Fail: [ONNXRuntimeError] : 1 : FAIL : bad model",
        "2026-12-05 08:10:59.620 (   2.755s) [        E7034B80]   api_config.cpp:126   INFO| Loaded",
        "2026-12-05 08:10:59.700 (   2.800s) [R_brainstream-de]  data_receiver.cpp:375 ERR| broke off",
    ]
    assert last_error_line(lines) == lines[2]
    assert last_error_line(["2026-01-01 10:00:00,000 brainstream.x ERROR: disk full", "bye"]).endswith(
        "ERROR: disk full"
    )
    assert last_error_line(["streaming ...", "all fine"]) is None
    assert exit_reason(-9, lines[3:]) == "killed by SIGKILL"
    assert exit_reason(2, ["brainstream decode: error: no LSL stream"]).endswith("error: no LSL stream")


# a node that ignores SIGINT (as one started from a script with `&` inherits it) and notes when SIGTERM came
DEAF_TO_SIGINT = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGINT, signal.SIG_IGN)
def term(*_):
    out.with_suffix(".stopped").write_text(repr(time.monotonic()))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
out.touch()
while True:
    time.sleep(0.01)
"""


def test_stop_is_phased_and_within_budget_when_nodes_ignore_sigint(tmp_path):
    nodes = [
        NodeSpec(f"n{i}", [sys.executable, "-c", DEAF_TO_SIGINT, str(tmp_path / f"n{i}")], stop_phase=phase)
        for i, phase in enumerate((0, 0, 0, 1, 2))
    ]
    sup = Supervisor(nodes).start()
    assert _wait(lambda: all((tmp_path / f"n{i}").exists() for i in range(5)), 30), "children did not start"
    codes = sup.stop(timeout=3.0)
    # before: 5 s of waiting on SIGINT per node, one node after the other (25 s here)
    assert sup.stop_seconds <= 3.5
    assert all(code == 0 for code in codes.values()), codes  # each stopped by SIGTERM, cleanly
    stopped = [float((tmp_path / f"n{i}.stopped").read_text()) for i in range(5)]
    assert max(stopped[:3]) < stopped[3] < stopped[4]  # workers, then the recorder's phase, then the broker's


STANDBY_NODE = """
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
if os.environ.get("BRAINSTREAM_STANDBY"):
    promoted = []
    signal.signal(signal.SIGUSR1, lambda *_: promoted.append(1))
    print("standby ready", file=sys.stderr, flush=True)
    while not promoted:
        time.sleep(0.01)
with out.open("a") as f:
    f.write(f"{os.getpid()}\\n")
while True:
    time.sleep(0.05)
"""


def test_a_killed_node_is_replaced_by_its_warm_standby(tmp_path):
    import os
    import signal

    serving = tmp_path / "serving"
    spec = NodeSpec("worker", [sys.executable, "-c", STANDBY_NODE, str(serving)], standby=True)
    sup = Supervisor([spec], standby_delay=0.1).start()
    try:
        assert _wait(lambda: sup.status()["worker"]["standby_ready"], 30), "no standby became ready"
        first = sup.pids()["worker"]
        standby_pid = sup._nodes["worker"].standby.process.pid
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: serving.exists() and str(standby_pid) in serving.read_text(), 5)
        assert sup.pids()["worker"] == standby_pid
        assert _wait(lambda: sup.status()["worker"]["standby_ready"], 30), "no new standby"
    finally:
        sup.stop()
    events = [what for _, node, what in sup.events]
    assert "killed by SIGKILL; standby promoted (1/3)" in events
    assert serving.read_text().split() == [str(first), str(standby_pid)]  # the standby served only once told


# a standby that takes a while to load, and says when it started and when it was ready
SLOW_STANDBY = """
import os, pathlib, sys, time
if os.environ.get("BRAINSTREAM_STANDBY"):
    out = pathlib.Path(sys.argv[1])
    started = time.monotonic()
    time.sleep(1.0)
    out.write_text(f"{started} {time.monotonic()}")
    print("standby ready", file=sys.stderr, flush=True)
while True:
    time.sleep(0.05)
"""


def test_standbys_warm_up_one_at_a_time_in_start_order(tmp_path):
    nodes = [
        NodeSpec(name, [sys.executable, "-c", SLOW_STANDBY, str(tmp_path / name)], standby=True)
        for name in ("decoder", "retrieval", "generator")
    ]
    sup = Supervisor(nodes, standby_delay=0.1).start()
    try:
        assert _wait(lambda: all(s["standby_ready"] for s in sup.status().values()), 60), "not all ready"
    finally:
        sup.stop()
    # each loaded alone: on a small machine, three at once took both cores from the running session
    spans = [
        tuple(map(float, (tmp_path / n).read_text().split())) for n in ("decoder", "retrieval", "generator")
    ]
    for (_, ready_before), (started_next, _) in zip(spans, spans[1:], strict=False):
        assert started_next >= ready_before
    started = [what for _, node, what in sup.events if what.startswith("standby started")]
    assert len(started) == 3


def test_collector_counts_what_the_session_produced_per_decoder_run():
    """Windows cut after the session's end are not counted (the recording stops there too); a restarted
    decoder (a new publisher instance) starts a new run."""
    from brainstream.realtime.bus.message import decode, encode
    from brainstream.realtime.session.collector import SessionCollector

    collector = SessionCollector("inproc://collector-test-unused")
    try:

        def window(src: str, seq: int, t: float) -> None:
            frames = encode("embedding.s", [], seq=seq, src=src, t_sample=t, trace=[["decoder", t + 0.01]])
            collector.handle(decode(frames), now=t + 0.02)

        for i in range(3):
            window("decoder:aaa", i, 10.0 + i)
        for i in range(2):
            window("decoder:bbb", i, 20.0 + i)  # the replacement after a crash
        collector.end(25.0)
        window("decoder:bbb", 2, 25.5)  # cut from data after the end, published while stopping
    finally:
        collector.stop()
    assert collector.windows == 5
    runs = collector.runs()
    assert [(r["decoder"], r["windows"], r["restart"]) for r in runs] == [
        ("decoder:aaa", 3, False),
        ("decoder:bbb", 2, True),
    ]
    assert len(collector.push_to_embedding_ms) == 5


def test_collector_keeps_a_long_session_in_a_few_bytes_a_value():
    """A continuous session sends 10 windows a second for hours: the collector keeps every latency for its
    percentiles, at about 8 bytes a value (a list of Python floats took 32)."""
    import tracemalloc

    from brainstream.realtime.bus.message import decode, encode
    from brainstream.realtime.session.collector import SessionCollector

    stages = ["decoder.read", "decoder.encoded", "retrieval", "generator"]
    collector = SessionCollector("inproc://collector-test-unused")
    try:
        messages = []
        for i in range(3000):
            t = 100.0 + 0.1 * i
            trace = [[stage, t + 0.001 * (k + 1)] for k, stage in enumerate(stages)]
            head = {"rank_of_true": i % 7, "true_image_id": "x", "test_rank": i % 3, "n_test": 50}
            messages.append(decode(encode("embedding.s", [], seq=i, src="d:a", t_sample=t, trace=trace)))
            messages.append(decode(encode("retrieval", [], extras=head, seq=i, src="r:a", t_sample=t,
                                          trace=trace)))  # fmt: skip
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for msg in messages:
            collector.handle(msg, now=msg.t_sample + 0.01)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    finally:
        collector.stop()
    values = len(collector.push_to_embedding_ms) + len(collector.ranks) + len(collector.test_ranks)
    values += sum(map(len, collector.stage_ms.values())) + sum(map(len, collector.hop_ms.values()))
    assert collector.windows == 3000 and values == 3000 * (1 + 2 + 2 * len(stages) + 2 * 2)
    assert grown / values < 12, f"{grown / values:.1f} bytes a value"
    assert collector.stages()["generator"]["p50"] == pytest.approx(4.0)
    assert collector.test_retrieval_summary()["top1"] == pytest.approx(1 / 3, abs=1e-3)


def test_collector_summaries_read_while_its_thread_appends():
    """The demo reads the running top-5 and the summaries while the collector's thread keeps appending: a
    numpy view of a growing array would make the next append fail and end the collector's thread."""
    import threading

    from brainstream.realtime.bus.message import decode, encode
    from brainstream.realtime.session.collector import SessionCollector

    collector = SessionCollector("inproc://collector-test-unused")
    head = {"rank_of_true": 3, "true_image_id": "x", "test_rank": 1, "n_test": 50, "two_way": 0.75}
    msgs = [decode(encode(topic, [], extras=head, seq=i, src="n:a", t_sample=float(i),
                          trace=[["decoder", i + 0.01], ["retrieval", i + 0.02]]))
            for i in range(2000) for topic in ("embedding.s", "retrieval", "image")]  # fmt: skip
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for msg in msgs:
                collector.handle(msg, now=msg.t_sample + 0.03)
        except BaseException as exc:  # noqa: BLE001 - the failure under test happens in this thread
            errors.append(exc)

    thread = threading.Thread(target=feed)
    try:
        thread.start()
        while thread.is_alive():
            collector.stages(), collector.hops(), collector.push_to_embedding()
            collector.retrieval_summary(1000), collector.test_retrieval_summary()
            collector.identification_summary()
        thread.join()
    finally:
        collector.stop()
    assert errors == []
    assert collector.windows == 2000 and len(collector.ranks) == 2000 and len(collector.two_way) == 2000


# a supervisor in its own process that starts one real node (the bus broker) and then waits to be killed
ORPHANING_SUPERVISOR = """
import sys, time
from brainstream.realtime.session.supervisor import NodeSpec, Supervisor, brainstream_argv
front, back = sys.argv[1:3]
sup = Supervisor([NodeSpec("bus", brainstream_argv("bus", "--frontend", front, "--backend", back))])
sup.start()
print(sup.pids()["bus"], flush=True)
time.sleep(120)
"""


def test_nodes_stop_when_their_supervisor_is_killed(tmp_path):
    """SIGKILL gives a supervisor no chance to stop its nodes; they must notice and stop themselves."""
    import contextlib
    import os
    import signal
    import subprocess

    import psutil

    from tests.net import free_ports

    front, back = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANING_SUPERVISOR, front, back], stdout=subprocess.PIPE, text=True
    )
    node = None
    try:
        node = psutil.Process(int(parent.stdout.readline()))
        assert node.is_running() and node.ppid() == parent.pid
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)

        def gone() -> bool:
            try:
                return node.status() == psutil.STATUS_ZOMBIE  # re-parented and not yet reaped
            except psutil.NoSuchProcess:
                return True

        assert _wait(gone, timeout=15), f"node {node.pid} still runs after its supervisor was killed"
    finally:
        parent.kill()
        if node is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                node.kill()
