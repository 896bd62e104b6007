"""The generator node on a real (inproc) bus with the tiny generator."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from brainstream.realtime.bus import Broker, Publisher, Subscriber
from brainstream.realtime.services import GeneratorNode


@pytest.fixture(scope="module")
def tiny():
    from brainstream.models.generation import load_generator

    return load_generator("tiny")


@pytest.fixture
def bus():
    tag = uuid.uuid4().hex
    front, back = f"inproc://gen-front-{tag}", f"inproc://gen-back-{tag}"
    with Broker(front, back):
        yield front, back


def emb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(128).astype(np.float32)


def test_generator_node_publishes_images_and_extends_the_trace(tiny, bus):
    front, back = bus
    with (
        GeneratorNode(tiny, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None),
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("image",)) as sub,
    ):
        msg = None
        deadline = time.monotonic() + 15
        while msg is None and time.monotonic() < deadline:
            pub.publish(
                "embedding.s1",
                [emb(0)],
                t_sample=5.0,
                trace=[["decoder", 5.1]],
                space=tiny.space,
                image_id="a",
            )
            msg = sub.recv(timeout=0.5)
        assert msg is not None, "no image from the generator node"
        image = msg.arrays[0]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, tiny.generate(emb(0), tiny.space))
        assert msg.get("image_id") == "a" and msg.t_sample == 5.0
        assert [s for s, _ in msg.trace] == ["decoder", "generator"]
        assert isinstance(msg.get("skipped"), int)


def test_generator_node_renders_only_the_newest_when_behind(tiny, bus):
    front, back = bus
    node = GeneratorNode(tiny, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None)
    with (
        node,
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, ("image",)) as sub,
    ):
        deadline = time.monotonic() + 15
        while sub.recv(timeout=0.3) is None:  # connected end to end
            pub.publish("embedding.s1", [emb(0)], space=tiny.space, image_id="warmup")
            assert time.monotonic() < deadline
        while sub.recv(timeout=0.5) is not None:
            pass
        before = dict(node.counts)
        n = 40
        for i in range(n):  # a burst far faster than one rendering
            pub.publish("embedding.s1", [emb(i)], space=tiny.space, image_id=f"e{i}")
        images = []
        while (m := sub.recv(timeout=2.0)) is not None:
            images.append(m)
        assert images, "no image for the burst"
        assert images[-1].get("image_id") == f"e{n - 1}"  # the newest one is always rendered
        assert len(images) < n
        got = {k: node.counts[k] - before[k] for k in ("embeddings", "images", "skipped")}
        assert got["embeddings"] == n and got["images"] + got["skipped"] == n
        assert sum(m.get("skipped") for m in images) == got["skipped"] > 0


def test_generator_node_refuses_another_space(tiny, bus):
    front, back = bus
    with (
        GeneratorNode(tiny, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None) as node,
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("image",)) as sub,
    ):
        deadline = time.monotonic() + 10
        while node.counts["refused"] == 0:
            pub.publish("embedding.s1", [emb(0)], space="openclip:ViT-H-14:laion2b_s32b_b79k")
            assert sub.recv(timeout=0.1) is None
            assert time.monotonic() < deadline
        assert any("openclip" in a and tiny.space in a for a in node.alarms)


def test_bench_services_reports_the_issue_json(tiny):
    import argparse
    import json

    from brainstream.realtime.benchmarks import services

    args = argparse.Namespace(n=5, rate=20.0, hop_n=30, generator=tiny, gallery_size=50, json=True)
    result = json.loads(json.dumps(services.run(args)))
    assert set(result) == {"stages", "bus_hop"}
    assert set(result["bus_hop"]) == {"ours_p50_ms", "raw_pyzmq_p50_ms"}
    assert all(v > 0 for v in result["bus_hop"].values())
    for stage in ("retrieval", "generator"):
        assert set(result["stages"][stage]) == {"p50_ms", "p99_ms"}
        assert 0 < result["stages"][stage]["p50_ms"] <= result["stages"][stage]["p99_ms"]


def test_generator_node_attaches_the_2_way_identification_among_the_test_images(tiny, bus):
    from brainstream.models.embedders import get_embedder
    from brainstream.models.reconstruction import two_way_scores
    from brainstream.models.stimuli import procedural_images

    images = [im for _, im, _ in procedural_images(6, seed=8, size=64)]
    ids = [f"t{k}" for k in range(6)]
    embeddings = get_embedder("demo").embed(images)
    front, back = bus
    node = GeneratorNode(tiny, identify=(ids, embeddings), sub_endpoint=back, pub_endpoint=front)
    with (
        node,
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("image",)) as sub,
    ):
        got = {}
        deadline = time.monotonic() + 30
        # one window at a time: the node renders only the newest queued embedding, so two sent together
        # could leave one of them never drawn
        for image_id in ("t2", "other"):
            while image_id not in got and time.monotonic() < deadline:
                pub.publish(
                    "embedding.s1", [embeddings[2]], t_sample=1.0, space=tiny.space, image_id=image_id
                )
                msg = sub.recv(timeout=1.0)
                if msg is not None:
                    got[msg.get("image_id")] = msg
    assert set(got) == {"t2", "other"}
    assert got["other"].get("two_way") is None  # not a test image: nothing to identify among
    expected = two_way_scores(get_embedder("demo").embed([got["t2"].arrays[0]]), embeddings, np.array([2]))[0]
    assert got["t2"].get("two_way") == pytest.approx(expected)


def test_generator_node_applies_the_configs_embedding_prior_as_offline_evaluation_does(bus):
    from brainstream.models.generation import load_generator
    from brainstream.models.generation.prior import PriorGenerator

    demo = load_generator("demo")  # the shipped demo generator and its prior (configs/generator/demo.yaml)
    assert isinstance(demo, PriorGenerator)
    front, back = bus
    with (
        GeneratorNode("demo", sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None),
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("image",)) as sub,
    ):
        msg = None
        deadline = time.monotonic() + 30
        while msg is None and time.monotonic() < deadline:
            pub.publish("embedding.s1", [emb(3)], t_sample=1.0, trace=[["decoder", 1.1]], space=demo.space)
            msg = sub.recv(timeout=0.5)
        assert msg is not None, "no image from the generator node"
        np.testing.assert_array_equal(msg.arrays[0], demo.generate(emb(3), demo.space))
        assert not np.array_equal(msg.arrays[0], demo.base.generate(emb(3), demo.space))


@pytest.mark.parametrize(
    ("argv", "name"),
    [(["generate", "--config", "tiny"], "generator"), (["retrieve", "--gallery", "demo"], "retrieval")],
)
def test_service_nodes_hold_numpys_blas_to_one_thread(argv, name):
    """An idle second OpenBLAS worker spins after every product and held a core beside the renders
    (docs/benchmarks.md): the generator on the CPU keeps BLAS within its config's cpu_threads (1 for tiny),
    the retrieval node to one thread, as FAISS searches."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from brainstream.models.generation import load_generator_config
    from tests.net import free_ports

    assert load_generator_config("tiny").cpu_threads == 1
    pub, sub = free_ports(2)
    bus = ["--sub", f"tcp://127.0.0.1:{sub}", "--pub", f"tcp://127.0.0.1:{pub}"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")  # what the process would run with, unlimited
    proc = subprocess.Popen(
        [sys.executable, "-m", "brainstream", *argv, *bus],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops" not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < deadline, (
                f"{argv[0]} ended before it was ready ({proc.poll()})"
            )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    stats = json.loads(out.split(f"{name} node stopped: ", 1)[1].splitlines()[0])
    assert stats["blas_threads"] == 1
