"""Recorder on real liblsl (loopback): streams, in-process streams, kill -9, disk full."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from brainstream.models import xdf
from brainstream.realtime.lsl_info import make_stream_info
from brainstream.realtime.recording import Recorder, StreamHeader

REPO = Path(__file__).resolve().parents[2]


def _outlets(name: str, n_ch: int = 3, sfreq: float = 200.0):
    sig = pylsl.StreamOutlet(
        make_stream_info(
            name, "EEG", [f"E{i}" for i in range(n_ch)], sfreq, units=["V"] * n_ch, source_id=name
        )
    )
    mrk = pylsl.StreamOutlet(
        make_stream_info(
            f"{name}-m", "Markers", ["marker"], 0, channel_format="string", source_id=f"{name}-m"
        )
    )
    return sig, mrk


def test_records_signal_markers_and_local_stream(tmp_path, unique_name):
    sig_out, mrk_out = _outlets(unique_name)
    path = tmp_path / "rec.xdf"
    alarms = []
    rec = Recorder(path, on_alarm=alarms.append).start()
    try:
        assert rec.add_stream(unique_name, timeout=5) == unique_name
        rec.add_stream(f"{unique_name}-m", timeout=5)
        emb = rec.add_local_stream(StreamHeader.local("embedding.s1", "Embedding", ["d0", "d1", "d2", "d3"]))
        t0 = pylsl.local_clock()
        data = np.arange(3 * 400, dtype=np.float32).reshape(400, 3).T  # (channels, times)
        ts = t0 + np.arange(400) / 200.0
        for k in range(0, 400, 40):
            sig_out.push_chunk(np.ascontiguousarray(data[:, k : k + 40].T), list(ts[k : k + 40]))
            mrk_out.push_sample([f"train/img{k}"], ts[k])
            emb.push(np.full((4, 1), k, np.float32), [ts[k]])
            time.sleep(0.02)
        deadline = time.monotonic() + 5
        while rec.stats["streams"][unique_name]["samples"] < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rec.stop()
        del sig_out, mrk_out
    assert alarms == [] and rec.alarms == []

    f = xdf.read_xdf(path, synchronize_clocks=False)
    s = f.stream(unique_name)
    assert s.ch_names == ["E0", "E1", "E2"] and s.ch_units == ["V"] * 3 and s.nominal_srate == 200.0
    np.testing.assert_array_equal(s.data, data)
    np.testing.assert_allclose(s.timestamps, ts, atol=1e-9)
    m = f.stream(f"{unique_name}-m")
    assert m.markers == [f"train/img{k}" for k in range(0, 400, 40)]
    np.testing.assert_allclose(m.timestamps, ts[::40], atol=1e-9)
    e = f.stream("embedding.s1")
    np.testing.assert_array_equal(e.data[0], np.arange(0, 400, 40))
    assert s.clock_times.size >= 1 and all(st.footer for st in f.streams)  # clean close: footers

    streams, header = pyxdf.load_xdf(path, verbose=False)
    by_name = {st["info"]["name"][0]: st for st in streams}
    np.testing.assert_array_equal(by_name[unique_name]["time_series"].T, data)
    assert set(by_name) == {unique_name, f"{unique_name}-m", "embedding.s1", "session-events"}
    assert len(by_name["session-events"]["time_series"]) == 0  # nothing went wrong: no session event
    assert header["info"]["version"][0] == "1.0"


def test_samples_liblsl_stamps_from_zero_at_connect_are_recorded_in_place(tmp_path, unique_name):
    """A recorder that connects in the middle of a pushed chunk receives samples liblsl stamps from 0
    (sccn/liblsl#161); the file has them contiguous with the first stamped sample, not an uptime-long gap."""
    sig_out, _ = _outlets(unique_name, n_ch=1, sfreq=100.0)
    path = tmp_path / "rec.xdf"
    rec = Recorder(path).start()
    try:
        rec.add_stream(unique_name, timeout=5)
        assert sig_out.wait_for_consumers(5.0)
        time.sleep(0.3)
        for i in range(5):
            sig_out.push_sample([float(i)], -1.0)  # DEDUCED_TIMESTAMP: stamped from 0 by the inlet
        time.sleep(0.2)
        sig_out.push_chunk(np.arange(5, 15, dtype=np.float32)[:, None], pylsl.local_clock())
        deadline = time.monotonic() + 5
        while rec.stats["streams"][unique_name]["samples"] < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rec.stop()
        del sig_out
    s = xdf.read_xdf(path, synchronize_clocks=False).stream(unique_name)
    np.testing.assert_array_equal(s.data[0], np.arange(15))
    np.testing.assert_allclose(np.diff(s.timestamps), 0.01, atol=1e-6)
    assert s.timestamps[0] > 2.0  # LSL clock readings, not the deduced 0.01 ...


def test_missing_stream_is_a_clear_error(tmp_path, unique_name):
    with Recorder(tmp_path / "r.xdf") as rec, pytest.raises(LookupError, match="no LSL stream with name="):
        rec.add_stream(unique_name, timeout=0.3)
    with pytest.raises(ValueError, match=r"\.xdf"):
        Recorder(tmp_path / "r.txt")


def _samples_behind_a_boundary(path, name: str) -> bool:
    """Whether the recording at ``path`` holds samples of stream ``name`` before its last Boundary chunk."""
    raw = path.read_bytes() if path.exists() else b""
    last_boundary = raw.rfind(xdf.BOUNDARY_UUID)
    if last_boundary < 0:
        return False
    try:
        prefix = xdf.parse_xdf(raw[: last_boundary + len(xdf.BOUNDARY_UUID)], synchronize_clocks=False)
        return prefix.stream(name).n_samples > 0
    except (KeyError, ValueError):  # the stream's header not written yet
        return False


def test_kill_9_keeps_everything_up_to_the_last_boundary(tmp_path, unique_name):
    """A real `brainstream record` process is killed with SIGKILL mid-session; the file must load."""
    sig_out, _ = _outlets(unique_name, n_ch=2, sfreq=500.0)
    path = tmp_path / "crash.xdf"
    proc = subprocess.Popen(
        [sys.executable, "-m", "brainstream", "record", str(path), "--stream", unique_name],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    counter = 0
    try:
        assert sig_out.wait_for_consumers(30), "the recording process never connected"
        t_next = pylsl.local_clock()
        deadline = time.monotonic() + 30
        kill_at = None
        # push a counter at 500 Hz in 20 ms chunks; kill 0.5 s after the file first holds samples behind a
        # boundary (a fixed time after connecting left none on a slow start-up)
        while kill_at is None or time.monotonic() < kill_at:
            block = np.arange(counter, counter + 10, dtype=np.float32)
            sig_out.push_chunk(np.stack([block, -block], 1), list(t_next + np.arange(10) / 500.0))
            counter += 10
            t_next += 0.02
            time.sleep(max(0.0, t_next - pylsl.local_clock()))
            if kill_at is None and counter % 50 == 0 and _samples_behind_a_boundary(path, unique_name):
                kill_at = time.monotonic() + 0.5
            assert time.monotonic() < deadline, "the recorder wrote no samples behind a boundary in 30 s"
        t_kill = pylsl.local_clock()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        del sig_out
    raw = path.read_bytes()
    last_boundary = raw.rfind(xdf.BOUNDARY_UUID) + len(xdf.BOUNDARY_UUID)
    assert last_boundary > len(xdf.BOUNDARY_UUID)
    f = xdf.read_xdf(path, synchronize_clocks=False)
    prefix = xdf.parse_xdf(raw[:last_boundary], synchronize_clocks=False).stream(unique_name)
    s = f.stream(unique_name)
    assert f.n_corrupt == 0 and not any(st.footer for st in f.streams)  # no clean close happened
    assert s.n_samples >= prefix.n_samples > 0
    # every sample the recorder got is there, in order, unchanged: a contiguous run of the counter
    np.testing.assert_array_equal(s.data[0], np.arange(s.data[0][0], s.data[0][0] + s.n_samples))
    np.testing.assert_array_equal(s.data[1], -s.data[0])
    # a crash loses at most about the last second (flush every 0.5 s; slack for a busy machine)
    assert s.timestamps[-1] > t_kill - 2.0
    streams, _ = pyxdf.load_xdf(path, verbose=False)
    got = {st["info"]["name"][0]: st for st in streams}[unique_name]["time_series"]
    assert got.shape[0] >= prefix.n_samples


DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys, threading, time
    import numpy as np
    from brainstream.realtime.recording import Recorder, StreamHeader

    # a real write failure from the kernel: writes past RLIMIT_FSIZE fail with EFBIG like a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
    alarmed = threading.Event()
    rec = Recorder(sys.argv[1], flush_interval=0.1, on_alarm=lambda m: alarmed.set()).start()
    h = rec.add_local_stream(StreamHeader.local("sig", "EEG", ["a", "b", "c", "d"], 1000.0))
    pushed = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and not alarmed.is_set():
        block = np.arange(pushed, pushed + 100, dtype=np.float32)
        h.push(block[None].repeat(4, 0), block.astype(float))
        pushed += 100
        time.sleep(0.01)
    for _ in range(20):  # the session goes on pushing after the alarm; nothing raises
        h.push(np.zeros((4, 100), np.float32), np.arange(100.0))
    rec.stop()
    print(json.dumps({"alarms": rec.alarms, "failed": rec.failed, "pushed": pushed, "alive": True}))
    """
)


def test_disk_full_stops_recording_with_alarm_and_keeps_the_file(tmp_path):
    path = tmp_path / "full.xdf"
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] and result["alive"]
    assert (
        len(result["alarms"]) == 1
        and "EFBIG" in result["alarms"][0]
        and "free disk space" in result["alarms"][0]
    )
    assert os.path.getsize(path) <= 60_000
    f = xdf.read_xdf(path)
    s = f.stream("sig")
    assert not f.truncated and f.n_corrupt == 0  # cut back to the last whole chunk
    assert 0 < s.n_samples <= result["pushed"]
    np.testing.assert_array_equal(s.data[0], np.arange(s.n_samples))
    pyxdf.load_xdf(path, verbose=False)


def test_lost_stream_raises_an_alarm_and_the_rest_keeps_recording(tmp_path, unique_name):
    sig_out, _ = _outlets(unique_name)
    keep_out, _ = _outlets(f"{unique_name}-keep")
    alarms: list[str] = []
    rec = Recorder(tmp_path / "lost.xdf", on_alarm=alarms.append).start()
    try:
        rec.add_stream(unique_name, timeout=5, recover=False)
        rec.add_stream(f"{unique_name}-keep", timeout=5, recover=False)
        del sig_out  # the device goes away
        deadline = time.monotonic() + 10
        while not alarms and time.monotonic() < deadline:
            keep_out.push_chunk(np.ones((10, 3), np.float32))
            time.sleep(0.05)
        # the decoder's reader says it in the same words
        assert len(alarms) == 1 and f"stream '{unique_name}' lost (outlet gone)" in alarms[0]
        n_before = rec.stats["streams"][f"{unique_name}-keep"]["samples"]
        for _ in range(10):
            keep_out.push_chunk(np.ones((10, 3), np.float32))
            time.sleep(0.05)
        time.sleep(0.4)
        assert rec.stats["streams"][f"{unique_name}-keep"]["samples"] > n_before
    finally:
        rec.stop()
        del keep_out
    assert rec.alarms == alarms and not rec.failed


def test_record_cli_json_and_segments(tmp_path, unique_name, capsys):
    from brainstream.cli import main

    sig_out, _ = _outlets(unique_name)
    stop = threading.Event()

    def pump(outlet: pylsl.StreamOutlet) -> None:
        k = 0
        while not stop.is_set():
            outlet.push_chunk(np.full((10, 3), k, np.float32))
            k += 1
            time.sleep(0.05)

    pusher = threading.Thread(target=pump, args=(sig_out,), daemon=True)
    pusher.start()
    try:
        rc = main(
            ["record", str(tmp_path / "cli.xdf"), "--stream", unique_name, "--duration", "1.5", "--json"]
        )
    finally:
        stop.set()
        pusher.join()
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["paths"] == [str(tmp_path / "cli.xdf")] and result["alarms"] == []
    assert result["streams"][unique_name] > 0
    s = xdf.read_xdf(tmp_path / "cli.xdf").stream(unique_name)
    assert s.n_samples == result["streams"][unique_name]
    assert np.all(np.diff(s.data[0]) >= 0)  # in order

    # the same stream into half-second segments: every segment is a complete XDF file
    rec = Recorder(tmp_path / "seg.xdf", segment_seconds=0.5, flush_interval=0.25).start()
    try:
        rec.add_stream(unique_name, timeout=5)
        for k in range(30):
            sig_out.push_chunk(np.full((10, 3), k, np.float32))
            time.sleep(0.05)
        time.sleep(0.4)
    finally:
        rec.stop()
        del sig_out
    assert len(rec.paths) >= 2 and rec.paths[0].name == "seg_001.xdf"
    parts = [xdf.read_xdf(p).stream(unique_name) for p in rec.paths]
    assert all(p.footer for p in parts)  # each segment closed with footers
    values = np.concatenate([p.data[0] for p in parts])
    np.testing.assert_array_equal(values, np.repeat(np.arange(30), 10).astype(np.float32))


def test_record_cli_missing_stream_is_a_user_error(tmp_path, unique_name, capsys, monkeypatch):
    from brainstream.cli import main, record

    monkeypatch.setattr(record, "RESOLVE_TIMEOUT_S", 0.3)
    assert main(["record", str(tmp_path / "x.xdf"), "--stream", unique_name]) == 2
    err = capsys.readouterr().err
    assert "no LSL stream with name=" in err and "brainstream streams" in err


def test_bus_outputs_are_recorded(tmp_path, unique_name):
    """Embeddings and retrievals off a real ZeroMQ bus (inproc) land in the XDF as arrays and JSON."""
    from brainstream.realtime.bus import Publisher
    from brainstream.realtime.recording.bus_recorder import BusRecorder

    endpoint = f"inproc://{unique_name}"
    pub = Publisher(endpoint, name="decoder", bind=True, heartbeat_interval=None)
    rec = Recorder(tmp_path / "bus.xdf").start()
    bus = BusRecorder(rec, endpoint, topics=("embedding.", "retrieval")).start()
    sent = []
    try:
        deadline = time.monotonic() + 10
        k = 0
        while bus.n_messages < 5 and time.monotonic() < deadline:  # PUB/SUB slow joiner: keep sending
            emb = np.full(8, k, np.float32)
            t = 100.0 + k
            pub.publish(
                "embedding.sub-01", [emb], t_sample=t, space="demo", event=f"train/img{k}", image_id=None
            )
            pub.publish("retrieval", [np.array([0.9, 0.1], np.float32)], t_sample=t, ids=["a", "b"])
            sent.append(k)
            k += 1
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        bus.stop()
        rec.stop()
        pub.close()
    f = xdf.read_xdf(tmp_path / "bus.xdf")
    e = f.stream("bus:embedding.sub-01")
    assert e.channel_count == 8 and e.n_samples >= 3
    first = int(e.data[0, 0])
    np.testing.assert_array_equal(e.data, np.repeat(np.arange(first, first + e.n_samples)[None], 8, 0))
    np.testing.assert_allclose(e.timestamps, 100.0 + e.data[0])  # stamped with t_sample
    log = [json.loads(m) for m in f.stream("bus").markers]
    topics = {m["topic"] for m in log}
    assert topics == {"embedding.sub-01", "retrieval"}
    retrieval = next(m for m in log if m["topic"] == "retrieval")
    assert retrieval["ids"] == ["a", "b"] and retrieval["arrays"] == [{"dtype": "float32", "shape": [2]}]
    assert next(m for m in log if m["topic"].startswith("embedding"))["event"].startswith("train/img")


def test_record_cli_alarms_on_source_loss_and_writes_the_gap_into_the_file(tmp_path, unique_name, capsys):
    """The outlet dies and comes back (same source id): the recorder says so at once, in the decoder's
    words, reconnects, and the file's session-events stream holds the loss, the return and the gap."""
    from brainstream.cli import main

    times: dict[str, float] = {}

    def device() -> None:
        outlet, _ = _outlets(unique_name)
        while not outlet.have_consumers():
            time.sleep(0.01)
        for life in range(2):
            t_end = pylsl.local_clock() + 1.0
            while pylsl.local_clock() < t_end:
                outlet.push_chunk(np.zeros((10, 3), np.float32), pylsl.local_clock())
                time.sleep(0.05)
            if life == 0:
                del outlet
                times["died"] = pylsl.local_clock()
                time.sleep(1.0)
                outlet, _ = _outlets(unique_name)  # a restarted device: same source id
                times["back"] = pylsl.local_clock()
        del outlet

    out = tmp_path / "lost.xdf"
    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    main(["record", str(out), "--stream", unique_name, "--duration", "4", "--json"])
    thread.join()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any(f"stream '{unique_name}' lost (outlet gone)" in a for a in result["alarms"]), result["alarms"]
    kinds = [e["kind"] for e in result["events"]]
    assert kinds[:1] == ["lost"] and "reconnected" in kinds and "gap" in kinds, kinds
    lost = result["events"][0]
    assert lost["t"] - times["died"] < 1.0  # noticed at once, not after liblsl's silent recovery
    gap = next(e for e in result["events"] if e["kind"] == "gap")
    assert gap["t_before"] < times["died"] and gap["t_after"] > times["back"]
    assert gap["missing_samples"] == pytest.approx((gap["t_after"] - gap["t_before"]) * 200 - 1, abs=1)
    assert result["gaps"] == {unique_name: gap["missing_samples"]}
    streams = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(out)[0]}
    logged = [json.loads(v[0]) for v in streams["session-events"]["time_series"]]
    assert [e["kind"] for e in logged] == kinds
