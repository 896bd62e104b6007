"""A session split across hosts, the parts that run on one machine: the bus address in the pipeline config,
choosing a host's nodes, the publisher's alarm while the bus is unreachable, hosts in status messages and
on the display, clock offsets between hosts in the collector, and liblsl's configuration file.

The real two-host run (network namespaces joined by a veth pair) is in tests/e2e/test_multihost.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from brainstream.realtime.bus import Broker, BusMessage, Publisher, Subscriber, generate_keys
from tests.net import free_ports


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ------------------------------------------------------------------------------------------ the config
def test_bus_host_gives_both_endpoints_and_needs_keys_off_loopback():
    from brainstream.realtime.pipeline_config import BusConfig

    bus = BusConfig(host="10.20.0.2", keys_dir="keys")
    assert (bus.pub, bus.sub) == ("tcp://10.20.0.2:5701", "tcp://10.20.0.2:5702")
    assert BusConfig.model_validate(bus.model_dump()) == bus  # a dumped config loads again
    assert BusConfig(host="::1", sub_port=6002).sub == "tcp://[::1]:6002"
    assert BusConfig().pub == "tcp://127.0.0.1:5701"
    with pytest.raises(ValueError, match="keys_dir"):
        BusConfig(host="10.20.0.2")
    with pytest.raises(ValueError, match="not both"):
        BusConfig(host="10.20.0.2", keys_dir="keys", pub="tcp://10.20.0.9:7000")
    with pytest.raises(ValueError, match="must differ"):
        BusConfig(host="127.0.0.1", pub_port=6000, sub_port=6000)


def test_a_host_runs_only_the_named_nodes_in_start_order(tmp_path):
    from brainstream.models.config_base import resolve_config_path
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.graph import SessionPlan, session_nodes

    path = resolve_config_path("demo_meg", "pipelines")
    config = load_pipeline_config(path)
    bus = config.bus.model_validate({"host": "10.20.0.2", "keys_dir": "k"})
    config = config.model_copy(update={"bus": bus})
    plan = SessionPlan(run_dir=tmp_path, config_path=path, only=["generator", "bus", "retrieval"])
    nodes = session_nodes(config, plan)
    assert [n.name for n in nodes] == ["bus", "retrieval", "generator"]
    bus_argv = list(nodes[0].argv)
    assert bus_argv[bus_argv.index("--frontend") + 1] == "tcp://10.20.0.2:5701"
    assert bus_argv[bus_argv.index("--keys") + 1] == "k"
    assert "tcp://10.20.0.2:5702" in nodes[1].argv  # the others connect to the bus host
    with pytest.raises(ValueError, match="unknown node.*decoderr"):
        session_nodes(config, SessionPlan(run_dir=tmp_path, config_path=path, only=["decoderr"]))
    with pytest.raises(ValueError, match="switched off"):
        no_display = SessionPlan(run_dir=tmp_path, config_path=path, only=["display"], display=False)
        session_nodes(config, no_display)


def test_live_refuses_an_unknown_node_before_starting_anything(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "brainstream", "live", "--config", "demo_meg", "--nodes", "bus,gpu",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "unknown node(s) gpu" in proc.stderr and "decoder" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_live_says_once_that_the_keys_folder_is_missing(tmp_path):
    pipeline = tmp_path / "lab.yaml"
    pipeline.write_text(
        "name: lab\ninput:\n  signal: {name: s}\n  device: ctf275_things_meg\nencoder: {checkpoint: demo}\n"
        f"gallery: demo\nbus: {{host: 192.0.2.7, keys_dir: {tmp_path / 'no-keys'}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "brainstream", "live", "--config", str(pipeline), "--nodes", "decoder",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "bus.keys_dir" in proc.stderr and "brainstream keys generate" in proc.stderr
    assert "live session" not in proc.stdout  # nothing was started


# ------------------------------------------------------------------------------ the link to the bus
def test_publisher_alarms_while_the_bus_is_unreachable_and_clears_when_it_returns(caplog):
    front, back = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    with Publisher(front, name="decoder", heartbeat_interval=0.2) as pub:
        assert _wait_for(lambda: pub.alarms, 10), "no alarm with no bus"
        assert "cannot reach the bus at " + front in pub.alarms[0] and "retrying" in pub.alarms[0]
        assert pub.link["connected"] is False
        with Broker(front, back):
            assert _wait_for(lambda: not pub.alarms, 10), pub.alarms
            assert pub.link["connected"] is True
        assert _wait_for(lambda: pub.alarms, 10), "no alarm after the bus went away"
        with Broker(front, back):
            assert _wait_for(lambda: not pub.alarms, 10)
            assert pub.link["reconnects"] == 1
    assert any("again after" in r.getMessage() for r in caplog.records)


def test_publisher_says_when_the_bus_refuses_its_keys(tmp_path):
    good, other = generate_keys(tmp_path / "bus"), generate_keys(tmp_path / "stranger")
    front, back = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))  # CURVE works on loopback too
    # a client pair the broker does not know, with the right server key
    (tmp_path / "mixed").mkdir()
    for name in ("server.key",):
        (tmp_path / "mixed" / name).write_bytes((good.directory / name).read_bytes())
    for name in ("client.key", "client.key_secret"):
        (tmp_path / "mixed" / name).write_bytes((other.directory / name).read_bytes())
    with Broker(front, back, keys=good), Publisher(front, name="x", keys=tmp_path / "mixed") as pub:
        assert _wait_for(lambda: pub.alarms, 10)
        assert "refuses this node's CURVE keys" in pub.alarms[0]


def test_status_messages_and_heartbeats_carry_the_host(monkeypatch):
    monkeypatch.setenv("BRAINSTREAM_HOST", "gpu-7")
    endpoint = f"inproc://host-{uuid.uuid4().hex}"
    with (
        Publisher(endpoint, name="retrieval", bind=True, heartbeat_interval=0.1) as pub,
        Subscriber(endpoint, topics=("status.",), deliver_heartbeats=True) as sub,
    ):
        seen: dict[str, BusMessage] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 2:
            pub.publish("status.retrieval", state="running", alarms=[], stats={})
            msg = sub.recv(timeout=0.1)
            if msg is not None:
                seen[msg.topic] = msg
        assert set(seen) == {"status.retrieval", "status.retrieval.heartbeat"}
        assert all(m.get("host") == "gpu-7" for m in seen.values())


def test_display_shows_which_host_each_node_runs_on(qtbot):
    from brainstream.realtime.display.panels import LatencyPanel
    from brainstream.realtime.display.state import DisplayState

    state = DisplayState()
    for node, host in (("decoder", "acq-pc"), ("retrieval", "gpu-1")):
        header = {"seq": 0, "src": f"{node}:0", "state": "running", "alarms": [], "stats": {}, "host": host}
        assert state.ingest(BusMessage(f"status.{node}", header, []), t_received=1.0)
    state.ingest(BusMessage("status.old", {"seq": 0, "src": "old:0", "state": "running", "alarms": [],
                                           "stats": {}}, []), t_received=1.0)  # fmt: skip
    panel = LatencyPanel()
    qtbot.addWidget(panel)
    panel.update_status(state)
    text = panel.nodes.text()
    assert "decoder@acq-pc" in text and "retrieval@gpu-1" in text
    assert "old@" not in text and "old" in text  # a node that does not say its host is shown as before


# ----------------------------------------------------------------------------------------- clocks
def _trace_msg(topic: str, t_sample: float, trace: list, **extra) -> BusMessage:
    header = {"seq": 0, "src": "x:0", "t_sample": t_sample, "trace": trace, **extra}
    return BusMessage(topic, header, [])


def _status(node: str, host: str) -> BusMessage:
    return BusMessage(f"status.{node}", {"seq": 0, "src": f"{node}:0", "host": host, "stats": {}}, [])


def test_collector_compares_stamps_of_two_hosts_only_through_their_clock_offset(monkeypatch):
    from brainstream.realtime.session.clocks import ClockBeacon, HostClocks
    from brainstream.realtime.session.collector import SessionCollector

    here, there = f"here-{uuid.uuid4().hex[:6]}", f"there-{uuid.uuid4().hex[:6]}"
    clocks = HostClocks(local_host=here)
    collector = SessionCollector(f"inproc://nothing-{uuid.uuid4().hex}", clocks=clocks)
    try:
        t0 = 1000.0
        trace = [["decoder.window", t0 + 0.010], ["decoder", t0 + 0.020], ["retrieval", t0 + 0.023]]
        collector.handle(_trace_msg("retrieval", t0, trace, ids=["a"]), now=t0 + 0.03)
        # nothing known about the hosts yet: the decoder's own stages compare, the hop does not
        assert "decoder->retrieval" not in collector.hops()
        assert collector.clock_report()["uncorrected"] == {"retrieval": 1, "decoder->retrieval": 1}
        assert collector.stages()["decoder"]["p50"] == pytest.approx(20.0)

        collector.handle(_status("decoder", there), now=t0)
        collector.handle(_status("retrieval", here), now=t0)
        collector.handle(_trace_msg("retrieval", t0, trace, ids=["a"]), now=t0 + 0.03)
        assert "decoder->retrieval" not in collector.hops()  # the other host's offset is not measured yet
        assert collector.clock_report()["uncorrected"]["decoder->retrieval"] == 2

        beacon = ClockBeacon(there)  # the other host's clock, answering LSL's probes (on loopback here)
        try:
            assert _wait_for(lambda: (clocks.refresh(timeout=1.0), clocks.offset(there))[1] is not None, 20)
        finally:
            beacon.close()
        offset = clocks.offset(there)
        report = collector.clock_report()
        assert report["node_hosts"] == {"decoder": there, "retrieval": here}
        assert report["offsets"][there]["uncertainty_ms"] == pytest.approx(offset.uncertainty_s * 1e3)
        # one machine, one clock: LSL's estimate is zero within its own uncertainty (plus a little slack)
        assert abs(offset.offset_s) <= offset.uncertainty_s + 0.5e-3
        collector.handle(_trace_msg("retrieval", t0, trace, ids=["a"]), now=t0 + 0.03)
        hop = collector.hops()["decoder->retrieval"]["p50"]
        assert hop == pytest.approx(3.0 - offset.offset_s * 1e3)  # t_here = t_there + offset
    finally:
        collector._sub.close()


# -------------------------------------------------------------------------------------- lsl-config
def test_lsl_config_writes_known_peers_and_keeps_an_old_file(tmp_path):
    from brainstream.realtime.lsl_config import lsl_api_config_text, write_lsl_api_config

    text = lsl_api_config_text(["10.0.0.1", "acq-pc", "10.0.0.1"], "lab-2")
    assert "[lab]\nKnownPeers = {10.0.0.1, acq-pc}\nSessionID = lab-2\n" in text
    for peers, match in (([], "at least one"), (["a b"], "neither an IP"), (["-x"], "neither an IP")):
        with pytest.raises(ValueError, match=match):
            lsl_api_config_text(peers)
    with pytest.raises(ValueError, match="session id"):
        lsl_api_config_text(["10.0.0.1"], "two words")
    path = tmp_path / "lsl_api" / "lsl_api.cfg"
    assert write_lsl_api_config(path, ["10.0.0.1"]) is None
    assert write_lsl_api_config(path, ["10.0.0.1"]) is None  # the same content: nothing to keep
    old = path.read_text()
    with pytest.raises(FileExistsError, match="--force"):
        write_lsl_api_config(path, ["10.0.0.2"])
    assert path.read_text() == old
    backup = write_lsl_api_config(path, ["10.0.0.2"], force=True)
    assert backup is not None and backup.read_text() == old and "10.0.0.2" in path.read_text()


_RESOLVE = textwrap.dedent(
    """
    import sys, pylsl
    name = sys.argv[1]
    if sys.argv[2] == "serve":
        outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "test", 1, 0, pylsl.cf_int8, name))
        print("ready", flush=True)
        sys.stdin.read()
    else:
        print(len(pylsl.resolve_byprop("name", name, minimum=1, timeout=float(sys.argv[3]))))
    """
)


def test_liblsl_reads_the_written_session_id(tmp_path):
    """Streams of another LSL session are invisible: proof that liblsl really reads the file we write."""
    cfg = tmp_path / "cfg" / "lsl_api.cfg"  # not in the working folder, where liblsl would find it anyway
    proc = subprocess.run(
        [sys.executable, "-m", "brainstream", "lsl-config", "--peers", "127.0.0.1", "--session-id",
         f"bs-{uuid.uuid4().hex[:8]}", "--out", str(cfg), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    name = f"bs-session-{uuid.uuid4().hex[:8]}"
    in_session = {**os.environ, "LSLAPICFG": str(cfg)}
    outside = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    server = subprocess.Popen(
        [sys.executable, "-c", _RESOLVE, name, "serve"],
        env=in_session, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert server.stdout.readline().strip() == "ready"

        def found(env: dict, timeout: str) -> int:
            out = subprocess.run([sys.executable, "-c", _RESOLVE, name, "find", timeout], env=env,
                                 capture_output=True, text=True, timeout=60, cwd=Path(tmp_path))  # fmt: skip
            return int(out.stdout.strip().splitlines()[-1])

        assert found(in_session, "5") == 1
        assert found(outside, "1.5") == 0
    finally:
        server.stdin.close()
        server.wait(timeout=10)


def _retrieval_seen_by_display(state, decoder_host: str, retrieval_host: str) -> BusMessage:
    """The two nodes' status (their hosts), then one retrieval stamped 10, 20 and 30 ms after its sample
    and received 40 ms after it (in the display's clock: ``t_received`` 10.04)."""
    for node, host in (("decoder", decoder_host), ("retrieval", retrieval_host)):
        header = {"seq": 0, "src": f"{node}:0", "state": "running", "alarms": [], "stats": {}, "host": host}
        state.ingest(BusMessage(f"status.{node}", header, []), t_received=1.0)
    trace = [["decoder.window", 10.01], ["decoder", 10.02], ["retrieval", 10.03]]
    header = {"seq": 0, "src": "retrieval:0", "t_sample": 10.0, "trace": trace, "ids": ["a"]}
    msg = BusMessage("retrieval", header, [np.ones(1, np.float32)])
    assert state.ingest(msg, t_received=10.04)
    return msg


def test_display_takes_no_latency_between_two_hosts_clocks_without_their_offset(monkeypatch):
    """Without clock offsets the display keeps latencies whose two times come from one host only."""
    from brainstream.realtime.display.state import STAGE_RECEIVED, DisplayState, LatestMessage

    monkeypatch.setenv("BRAINSTREAM_HOST", "display-pc")
    state = DisplayState(clock=lambda: 10.1)
    msg = _retrieval_seen_by_display(state, decoder_host="acq-pc", retrieval_host="display-pc")
    stages = state.stage_latencies()
    assert stages["decoder"]["p50_ms"] == pytest.approx(20.0)  # both times from the decoder's host
    assert "retrieval" not in stages and STAGE_RECEIVED not in stages  # acq-pc's t_sample vs other clocks
    assert state.record_draw("retrieval", LatestMessage("retrieval", msg, 10.04, 1), t_drawn=10.05) is None
    assert state.summary()["uncorrected_latencies"] == 3  # retrieval, received, the draw
    assert state.bus_to_display()["p50_ms"] == pytest.approx(10.0)  # retrieval -> receipt: one host


def test_display_reads_another_hosts_stamps_through_its_measured_clock_offset(monkeypatch):
    """With the other hosts' offsets (their clock beacons, measured by LSL) the display takes every latency,
    each time read in its own clock: t_here = t_there + offset."""
    from brainstream.realtime.display.state import STAGE_RECEIVED, DisplayState, LatestMessage
    from brainstream.realtime.session.clocks import ClockBeacon, HostClocks

    here, there = f"display-{uuid.uuid4().hex[:6]}", f"acq-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("BRAINSTREAM_HOST", here)
    clocks = HostClocks(local_host=here)
    beacon = ClockBeacon(there)  # the acquisition host's clock, answering LSL's probes (on loopback here)
    try:
        assert _wait_for(lambda: (clocks.refresh(timeout=1.0), clocks.offset(there))[1] is not None, 20)
    finally:
        beacon.close()
    shift_ms = clocks.offset(there).offset_s * 1e3
    state = DisplayState(clock=lambda: 10.1, clocks=clocks)
    msg = _retrieval_seen_by_display(state, decoder_host=there, retrieval_host=here)
    stages = state.stage_latencies()
    assert stages["decoder"]["p50_ms"] == pytest.approx(20.0)  # one host: no offset involved
    assert stages["retrieval"]["p50_ms"] == pytest.approx(30.0 - shift_ms)  # here's stamp vs there's sample
    assert stages[STAGE_RECEIVED]["p50_ms"] == pytest.approx(40.0 - shift_ms)
    drawn = state.record_draw("retrieval", LatestMessage("retrieval", msg, 10.04, 1), t_drawn=10.05)
    assert drawn == pytest.approx(50.0 - shift_ms)
    assert state.summary()["uncorrected_latencies"] == 0
