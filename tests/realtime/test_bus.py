"""The bus over real ZeroMQ sockets: round trips, fuzzing, gaps, heartbeats, start order and CURVE."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainstream.realtime.bus import (
    Broker,
    BusMessage,
    CurveKeys,
    InsecureBindError,
    MalformedMessageError,
    Publisher,
    Subscriber,
    decode,
    encode,
    generate_keys,
)
from brainstream.realtime.bus.security import is_loopback_endpoint

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inproc() -> str:
    return f"inproc://bus-test-{uuid.uuid4().hex}"


def exchange(
    pub: Publisher, sub: Subscriber, topic: str, arrays=(), timeout: float = 5.0, **kw
) -> BusMessage:
    """Publish until the subscriber gets one (PUB/SUB drops messages sent before the subscription lands)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(topic, arrays, **kw)
        msg = sub.recv(timeout=0.05)
        if msg is not None:
            return msg
    raise AssertionError(f"no message on {topic} within {timeout} s")


def test_round_trip_random_arrays_preserves_dtype_shape_and_values():
    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal(1024).astype(np.float32),
        rng.integers(0, 255, (32, 48, 3), dtype=np.uint8),
        rng.standard_normal((3, 7)).astype(np.float16),
        rng.standard_normal((4, 5))[:, ::2],  # not contiguous: sent as a contiguous copy
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian: sent little-endian, same values
        np.zeros((0, 5), np.float64),
        np.array(3.5),
        rng.integers(-(2**62), 2**62, 9),
        rng.random(4) > 0.5,
    ]
    endpoint = inproc()
    with (
        Publisher(endpoint, name="rt", bind=True) as pub,
        Subscriber(endpoint, topics=("embedding.",)) as sub,
    ):
        msg = exchange(
            pub,
            sub,
            "embedding.sub-01",
            arrays,
            t_sample=12.5,
            trace=[["decoder", 12.6]],
            space="demo",
            stage="test",
            event="test/img_1",
            image_id="img_1",
            split="test",
            window="event",
            scores=np.float32(0.25),
        )
    assert msg.topic == "embedding.sub-01"
    assert len(msg.arrays) == len(arrays)
    for got, sent in zip(msg.arrays, arrays, strict=True):
        assert got.shape == sent.shape
        assert got.dtype == sent.dtype.newbyteorder("<")
        np.testing.assert_array_equal(got, sent)
    assert msg.src.startswith("rt:") and msg.t_sample == 12.5 and msg.space == "demo"
    assert [stage for stage, _ in msg.trace] == ["decoder", "test"]
    assert msg.extras == {
        "event": "test/img_1",
        "image_id": "img_1",
        "split": "test",
        "window": "event",
        "scores": 0.25,
        "host": pub.host,  # every message names the host whose clock its times are in
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(["u1", "i2", "u4", "i8", "f2", "f4", "f8", "c8", "b1"]),
    shape=st.lists(st.integers(0, 5), max_size=4),
    seq=st.integers(0, 2**40),
)
def test_encode_decode_property(dtype: str, shape: list[int], seq: int):
    arr = (np.arange(int(np.prod(shape)), dtype=np.int64) % 7).astype(dtype).reshape(shape)
    frames = encode("image", [arr], seq=seq, src="p:1")
    msg = decode([f if isinstance(f, bytes) else f.tobytes() for f in frames])
    assert msg.seq == seq and msg.arrays[0].dtype == arr.dtype and msg.arrays[0].shape == arr.shape
    np.testing.assert_array_equal(msg.arrays[0], arr)


def test_encode_refuses_what_the_bus_cannot_carry():
    with pytest.raises(TypeError, match="plain numeric"):
        encode("image", [np.array(["a", "b"])], seq=0, src="p:1")
    with pytest.raises(TypeError, match="plain numeric"):
        encode("image", [np.array([object()])], seq=0, src="p:1")
    with pytest.raises(ValueError, match="own keys"):
        encode("image", [], seq=0, src="p:1", extras={"seq": 3})
    with pytest.raises(ValueError, match="topic"):
        encode("has space", [], seq=0, src="p:1")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_decode_of_random_frames_never_crashes(frames: list[bytes]):
    with contextlib.suppress(MalformedMessageError):
        decode(frames)


def _valid_header(**override) -> dict:
    header = {"v": 1, "seq": 0, "src": "x:1", "t_sample": None, "trace": [], "space": None, "frames": []}
    return header | override


MALFORMED = {
    "too_few_frames": [b"image"],
    "bad_topic": [b"\xff\xfe", msgpack.packb(_valid_header())],
    "bad_header": [b"image", b"\xc1 not msgpack"],
    "bad_version": [b"image", msgpack.packb(_valid_header(v=99))],
    "frame_count": [b"image", msgpack.packb(_valid_header(frames=[{"dtype": "<f4", "shape": [2]}]))],
    "frame_size": [
        b"image",
        msgpack.packb(_valid_header(frames=[{"dtype": "<f4", "shape": [3]}])),
        np.zeros(2, np.float32).tobytes(),
    ],
    "bad_dtype": [
        b"image",
        msgpack.packb(_valid_header(frames=[{"dtype": "|O", "shape": [1]}])),
        b"12345678",
    ],
    "bad_shape": [b"image", msgpack.packb(_valid_header(frames=[{"dtype": "<f4", "shape": [-1]}])), b""],
    "too_many_frames": [b"image", msgpack.packb(_valid_header())] + [b""] * 20,
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_decode_names_each_broken_rule(reason: str):
    with pytest.raises(MalformedMessageError) as info:
        decode(MALFORMED[reason])
    assert info.value.reason == reason


def test_malformed_messages_over_a_socket_are_dropped_and_counted():
    endpoint = inproc()
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.bind(endpoint)
    rng = np.random.default_rng(1)
    try:
        with Subscriber(endpoint, topics=("",), heartbeats=False) as sub:
            valid = encode("image", [np.ones((2, 2, 3), np.uint8)], seq=0, src="raw:1")
            deadline = time.monotonic() + 5
            while sub.recv(0.02) is None:  # wait until the subscription has reached the raw socket
                raw.send_multipart(valid)
                assert time.monotonic() < deadline
            garbage = list(MALFORMED.values()) + [
                [rng.bytes(int(rng.integers(1, 40))) for _ in range(int(rng.integers(2, 5)))]
                for _ in range(50)
            ]
            for frames in garbage:
                raw.send_multipart(frames)
            raw.send_multipart(encode("image", [np.zeros((2, 2, 3), np.uint8)], seq=1, src="raw:1"))
            msg = sub.recv(timeout=5)
            assert msg is not None and msg.seq == 1  # every piece of garbage in between was dropped
            stats = sub.stats
            assert stats["malformed"] == len(garbage)
            assert set(stats["malformed_by_reason"]) >= set(MALFORMED)
    finally:
        raw.close(linger=0)


def test_oversized_message_is_refused_without_crashing():
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # ZMQ_MAXMSGSIZE acts on the wire protocol, not on inproc
    with (
        Publisher(endpoint, name="big", bind=True, heartbeat_interval=None) as pub,
        Subscriber(endpoint, max_message_size=4096, heartbeats=False) as sub,
    ):
        exchange(pub, sub, "image", [np.zeros(16, np.uint8)])
        pub.publish("image", [np.zeros(1 << 20, np.uint8)])
        assert sub.recv(timeout=0.3) is None
        # ZeroMQ dropped the connection for good; the subscriber opens a fresh socket: small ones flow again
        assert exchange(pub, sub, "image", [np.zeros(16, np.uint8)]).arrays[0].shape == (16,)
        assert sub.stats["reconnects"] == 1


def test_publisher_refuses_a_frame_receivers_would_disconnect_for():
    with Publisher(inproc(), name="big", bind=True, heartbeat_interval=None, max_message_size=1024) as pub:
        with pytest.raises(ValueError, match="ZMQ_MAXMSGSIZE"):
            pub.publish("image", [np.zeros(2048, np.uint8)])
        pub.publish("image", [np.zeros(1024, np.uint8)])  # at the limit: fine


def test_gaps_are_counted_per_source_and_topic():
    endpoint = inproc()
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.bind(endpoint)
    try:
        with Subscriber(endpoint, topics=("embedding.",), heartbeats=False) as sub:
            deadline = time.monotonic() + 5
            while sub.recv(0.02) is None:
                raw.send_multipart(encode("embedding.a", [], seq=0, src="A:1"))
                assert time.monotonic() < deadline
            sent = {
                ("A:1", "embedding.a"): [1, 2, 5, 6, 10],
                ("B:1", "embedding.a"): [7, 8, 9],
                ("A:1", "embedding.b"): [0, 2],
            }
            for (src, topic), seqs in sent.items():
                for seq in seqs:
                    raw.send_multipart(encode(topic, [], seq=seq, src=src))
            raw.send_multipart(encode("embedding.a", [], seq=3, src="A:1"))  # late duplicate
            got = sub.drain(timeout=2)
            while len(got) < 11:
                more = sub.drain(timeout=1)
                assert more, f"only {len(got)} of 11 messages arrived"
                got += more
        # A/a: after 0, 1..10 arrive without 3, 4, 7, 8, 9 -> 5 missing; B starts at 7 (nothing counted
        # before the first message seen); A/b: 1 missing
        assert sub.stats["gaps"] == 6
        assert sub.stats["out_of_order"] == 1
    finally:
        raw.close(linger=0)


def test_forged_sequence_numbers_count_as_resets_not_billions_of_gaps():
    from brainstream.realtime.bus.subscriber import MAX_SEQ_JUMP, MAX_TRACKED_PUBLISHERS

    endpoint = inproc()
    raw = zmq.Context.instance().socket(zmq.PUB)
    raw.bind(endpoint)
    rng = np.random.default_rng(0)
    try:
        with Subscriber(endpoint, topics=("embedding.",), heartbeats=False) as sub:
            deadline = time.monotonic() + 5
            while sub.recv(0.02) is None:
                raw.send_multipart(encode("embedding.a", [], seq=0, src="real:1"))
                assert time.monotonic() < deadline
            forged = [int(v) for v in rng.integers(0, 2**40, 20)]  # well-formed headers, random seq
            sent = [("real:1", 1), ("real:1", 2), *(("real:1", v) for v in forged), ("real:1", 10**12)]
            sent += [("real:1", 10**12 + 3)]  # after a reset, real losses count again: 2 missing
            sent += [(f"junk:{i}", 7) for i in range(MAX_TRACKED_PUBLISHERS + 50)]  # a new src per message
            for src, seq in sent:
                raw.send_multipart(encode("embedding.a", [], seq=seq, src=src))
            got = 0
            while got < len(sent):
                more = sub.drain(timeout=2)
                assert more, f"only {got} of {len(sent)} messages arrived"
                got += len(more)
            stats = sub.stats
            assert stats["gaps"] == 2
            assert stats["seq_resets"] == 21  # each forged value and the jump to 10**12: a reset, not a loss
            assert len(sub._last_seq) <= MAX_TRACKED_PUBLISHERS  # bounded however many sources appear
            assert MAX_SEQ_JUMP < 2**40
    finally:
        raw.close(linger=0)


def test_topic_filter_sees_no_false_gaps_and_heartbeat_reveals_tail_losses():
    endpoint = inproc()
    with (
        Publisher(endpoint, name="mixed", bind=True, heartbeat_interval=0.1) as pub,
        Subscriber(endpoint, topics=("embedding.",)) as sub,
    ):
        exchange(pub, sub, "embedding.s", [np.zeros(3, np.float32)])
        for _ in range(20):
            pub.publish("signal.meg", [np.zeros((2, 4), np.float32), np.zeros(4)])
            pub.publish("embedding.s", [np.zeros(3, np.float32)])
        while sub.recv(timeout=0.3) is not None:
            pass
        assert sub.stats["gaps"] == 0  # signal.* interleaved but not subscribed: not a loss
        # simulate a lost tail: bump the counter as if 3 messages had gone out unseen
        pub._seqs["embedding.s"] += 3
        time.sleep(0.35)
        sub.recv(timeout=0.1)
        assert sub.stats["gaps"] == 3
        assert sub.stats["heartbeats"] >= 2


def _publisher_process(endpoint: str, interval: float) -> subprocess.Popen:
    code = (
        "import sys, time\n"
        "from brainstream.realtime.bus import Publisher\n"
        f"pub = Publisher({endpoint!r}, name='doomed', bind=True, heartbeat_interval={interval})\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_dead_publisher_is_detected_within_three_heartbeat_intervals():
    interval = 0.2
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = _publisher_process(endpoint, interval)
    try:
        with Subscriber(endpoint, topics=("embedding.",)) as sub:
            deadline = time.monotonic() + 10
            while not sub.publishers():
                sub.recv(timeout=0.1)
                assert time.monotonic() < deadline, "no heartbeat from the publisher process"
            (src,) = sub.publishers()
            assert sub.publishers()[src]["state"] == "alive"
            os.kill(proc.pid, signal.SIGKILL)  # no goodbye
            proc.wait()
            killed_at = time.monotonic()
            while sub.publishers()[src]["state"] != "lost":
                sub.recv(timeout=0.02)
                assert time.monotonic() - killed_at < 3 * interval + 0.3
            assert sub.stats["publishers_lost"] == 1
    finally:
        proc.kill()
        proc.wait()


def test_clean_close_is_reported_as_stopped_not_lost():
    endpoint = inproc()
    pub = Publisher(endpoint, name="polite", bind=True, heartbeat_interval=0.05)
    with Subscriber(endpoint, topics=("image",)) as sub:
        exchange(pub, sub, "image", [np.zeros((1, 1, 3), np.uint8)])
        pub.close()
        deadline = time.monotonic() + 2
        while sub.publishers()[pub.src]["state"] != "stopped":
            sub.recv(timeout=0.05)
            assert time.monotonic() < deadline
        time.sleep(0.2)
        assert sub.stats["publishers_lost"] == 0


def test_any_start_order_through_the_broker_without_hanging():
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    sub = Subscriber(back, topics=("marker",))  # before the broker
    assert sub.recv(timeout=0.05) is None  # no broker yet: times out, no hang
    pub = Publisher(front, name="early")
    pub.publish("marker", value="lost")  # nobody there: dropped, no hang
    try:
        with Broker(front, back):
            msg = exchange(pub, sub, "marker", value="train/img_1", t_sample=3.0)
            assert msg.get("value") == "train/img_1"
            late = Subscriber(back, topics=("marker",))  # after publisher and broker
            try:
                assert exchange(pub, late, "marker", value="x").get("value") == "x"
            finally:
                late.close()
        # broker gone: both sides keep working (messages are simply dropped)
        while sub.recv(timeout=0.05) is not None:
            pass
        pub.publish("marker", value="after")
        assert sub.recv(timeout=0.05) is None
    finally:
        pub.close()
        sub.close()


def test_broker_refuses_second_bind_with_a_clear_error():
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    with Broker(front, back), pytest.raises(OSError, match="already"):
        Broker(front, f"tcp://127.0.0.1:{free_port()}").start()


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5701", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:1", True),
        ("inproc://x", True),
        ("ipc:///tmp/x", True),
        ("tcp://*:5701", False),
        ("tcp://0.0.0.0:5701", False),
        ("tcp://192.168.1.4:5701", False),
        ("tcp://eth0:5701", False),
    ],
)
def test_loopback_detection(endpoint: str, loopback: bool):
    assert is_loopback_endpoint(endpoint) is loopback


def test_binding_a_public_interface_without_keys_is_refused():
    with pytest.raises(InsecureBindError, match="brainstream keys generate"):
        Broker("tcp://0.0.0.0:1", "tcp://127.0.0.1:2").start()
    with pytest.raises(InsecureBindError, match="refusing to bind"):
        Publisher("tcp://*:1", name="x", bind=True)


def test_curve_allows_listed_clients_and_denies_others(tmp_path: Path):
    keys = generate_keys(tmp_path / "keys", clients=("decoder", "display"))
    decoder_keys = CurveKeys.load(tmp_path / "keys", "decoder")
    display_keys = CurveKeys.load(tmp_path / "keys", "display")
    stranger_public, stranger_secret = zmq.curve_keypair()
    stranger = CurveKeys(keys.directory, keys.server_public, None, stranger_public, stranger_secret)
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    with Broker(front, back, keys=keys):
        with (
            Publisher(front, name="decoder", keys=decoder_keys) as pub,
            Subscriber(back, topics=("embedding.",), keys=display_keys) as sub,
            Subscriber(back, topics=("embedding.",), keys=stranger) as spy,
            Subscriber(back, topics=("embedding.",)) as plain,  # no CURVE at all
        ):
            msg = exchange(pub, sub, "embedding.s1", [np.ones(4, np.float32)], timeout=10)
            np.testing.assert_array_equal(msg.arrays[0], 1.0)
            for _ in range(10):
                pub.publish("embedding.s1", [np.ones(4, np.float32)])
            assert spy.recv(timeout=0.3) is None
            assert plain.recv(timeout=0.1) is None
            assert spy.stats["handshake_failures"] >= 1  # visible to the node, so it can raise an alarm
            assert spy.stats["reconnects"] == 0  # refused keys do not make the subscriber spin
        with (
            Publisher(front, name="intruder", keys=stranger) as bad,
            Subscriber(back, keys=display_keys) as sub2,
        ):
            for _ in range(20):
                bad.publish("embedding.s1", [np.zeros(4, np.float32)])
                assert sub2.recv(timeout=0.02) is None


def test_a_subscriber_says_when_it_cannot_reach_the_bus_and_when_it_can_again(caplog):
    """Nodes that only listen (the recorder, the collector) alarm like publishers when the broker is gone."""
    import logging

    from brainstream.realtime.bus.link import LINK_ALARM_AFTER_S
    from tests.net import free_ports

    front, back = (f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    caplog.set_level(logging.WARNING, logger="brainstream.realtime.bus.link")
    with Subscriber(back, topics=("x",)) as sub:
        t0 = time.monotonic()
        while not sub.alarms and time.monotonic() - t0 < LINK_ALARM_AFTER_S + 5:
            sub.recv(timeout=0.1)
        assert sub.alarms and f"cannot reach the bus at {back}; retrying" in sub.alarms[0]
        assert time.monotonic() - t0 >= LINK_ALARM_AFTER_S  # not before the grace period
        with Broker(front, back):
            deadline = time.monotonic() + 10
            while sub.alarms and time.monotonic() < deadline:
                sub.recv(timeout=0.1)
            assert not sub.alarms
    said = [r.getMessage() for r in caplog.records]
    assert sum("cannot reach the bus" in m for m in said) == 1  # once, not at every check
    assert any(m.startswith(f"reached the bus at {back} again after") for m in said)
