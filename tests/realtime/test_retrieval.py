"""Retrieval: exact and FAISS search, the space check, and the retrieval node on a real (inproc) bus."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from brainstream.models.gallery import Gallery, SpaceMismatchError
from brainstream.models.retrieval import ExactIndex, Retriever, build_index
from brainstream.realtime.bus import Broker, Publisher, Subscriber
from brainstream.realtime.services import RetrievalNode

SPACE = "test:random-64"


def make_gallery(root: Path, n: int = 200, dim: int = 64, seed: int = 0, images: bool = True) -> Gallery:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"img_{i:04d}" for i in range(n)]
    pictures = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(n)] if images else None
    return Gallery.save(root, embeddings=emb, ids=ids, space=SPACE, embedder="random", images=pictures)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Gallery:
    return make_gallery(tmp_path_factory.mktemp("gallery") / "g")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_own_embedding_retrieves_its_item_first(gallery: Gallery, dtype: str):
    retriever = Retriever(gallery, dtype=dtype)
    rng = np.random.default_rng(1)
    for row in rng.choice(len(gallery), 20, replace=False):
        image_id = gallery.ids[row]
        # scaled and slightly noisy: the norm must not matter
        noisy = gallery.embeddings[row] * 3.0 + 0.02 * rng.standard_normal(gallery.dim)
        result = retriever.search(noisy.astype(np.float32), k=5, space=SPACE, true_id=image_id)
        assert result.ids[0] == image_id and result.rank_of_true == 0
        assert np.all(np.diff(result.scores) <= 1e-6)
        assert Path(result.paths[0]).name == f"{image_id}.png" and Path(result.paths[0]).is_file()


def test_rank_of_true_counts_better_items_in_the_whole_gallery(gallery: Gallery):
    retriever = Retriever(gallery)
    query = gallery.embeddings[0] + gallery.embeddings[1]
    full = gallery.embeddings @ (query / np.linalg.norm(query))
    target = gallery.ids[int(np.argsort(-full)[30])]  # far outside the top 5
    result = retriever.search(query, k=5, true_id=target)
    assert result.rank_of_true == 30 and target not in result.ids


def test_exact_search_is_one_product_and_matches_argsort(gallery: Gallery):
    index = build_index(gallery.embeddings)
    assert isinstance(index, ExactIndex)
    queries = np.random.default_rng(2).standard_normal((7, gallery.dim)).astype(np.float32)
    scores, idx = index.search(queries, 10)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(qn @ gallery.embeddings.T), axis=1)[:, :10]
    np.testing.assert_array_equal(idx, expected)
    assert scores.shape == (7, 10) and scores.dtype == np.float32


def test_space_mismatch_is_refused_naming_both_spaces(gallery: Gallery):
    retriever = Retriever(gallery)
    with pytest.raises(
        SpaceMismatchError, match="openclip:ViT-H-14.*test:random-64|test:random-64.*openclip"
    ):
        retriever.search(gallery.embeddings[0], space="openclip:ViT-H-14")


def test_wrong_query_shape_is_explained(gallery: Gallery):
    with pytest.raises(ValueError, match=r"\(64,\)"):
        Retriever(gallery).search(np.zeros(32, np.float32))


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
def test_faiss_gives_the_exact_answers_on_a_small_gallery(gallery: Gallery, backend: str):
    pytest.importorskip("faiss", reason="FAISS is an optional extra: pip install brainstream[faiss]")
    exact, approx = Retriever(gallery), Retriever(gallery, backend=backend)
    queries = np.random.default_rng(3).standard_normal((25, gallery.dim)).astype(np.float32)
    for q in queries:
        a, b = exact.search(q, k=5), approx.search(q, k=5)
        assert a.ids == b.ids
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def _endpoints() -> tuple[str, str]:
    tag = uuid.uuid4().hex
    return f"inproc://retr-front-{tag}", f"inproc://retr-back-{tag}"


def _publish_until(pub: Publisher, sub: Subscriber, topic: str, emb: np.ndarray, timeout: float = 10, **kw):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(topic, [emb], **kw)
        msg = sub.recv(timeout=0.1)
        if msg is not None:
            return msg
    return None


def test_retrieval_node_answers_on_the_bus_and_extends_the_trace(gallery: Gallery):
    front, back = _endpoints()
    row = 17
    with (
        Broker(front, back),
        RetrievalNode(gallery, k=3, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None) as node,
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("retrieval",)) as sub,
    ):
        msg = _publish_until(
            pub,
            sub,
            "embedding.sub-01",
            gallery.embeddings[row],
            t_sample=100.0,
            trace=[["decoder", 100.01]],
            space=SPACE,
            event=f"test/{gallery.ids[row]}",
            image_id=gallery.ids[row],
            split="test",
            window="event",
        )
        assert msg is not None, "no retrieval answer"
        assert msg.get("ids")[0] == gallery.ids[row] and len(msg.get("ids")) == 3
        assert msg.arrays[0].dtype == np.float32 and msg.arrays[0].shape == (3,)
        assert msg.get("true_image_id") == gallery.ids[row] and msg.get("rank_of_true") == 0
        assert Path(msg.get("paths")[0]).is_file()
        assert [stage for stage, _ in msg.trace] == ["decoder", "retrieval"]
        assert msg.t_sample == 100.0 and msg.space == SPACE
        deadline = time.monotonic() + 2  # the node counts right after sending
        while node.stats["published"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_retrieval_node_refuses_another_space_and_raises_an_alarm(gallery: Gallery):
    front, back = _endpoints()
    with (
        Broker(front, back),
        RetrievalNode(gallery, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None) as node,
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("retrieval", "status.retrieval")) as sub,
    ):
        deadline = time.monotonic() + 10
        while node.stats["space_mismatch"] == 0 or node.stats["bad_payload"] == 0:
            pub.publish("embedding.s", [gallery.embeddings[0]], space="openclip:ViT-H-14")
            pub.publish("embedding.s", [np.zeros(3, np.float32)], space=SPACE)  # wrong size
            time.sleep(0.05)
            assert time.monotonic() < deadline
        status = None
        while status is None and time.monotonic() < deadline:
            msg = sub.recv(timeout=0.2)
            assert msg is None or msg.topic != "retrieval", "a refused embedding was answered"
            if msg is not None and msg.topic == "status.retrieval" and msg.get("alarms"):
                status = msg
        assert status is not None
        assert any("openclip:ViT-H-14" in a and SPACE in a for a in status.get("alarms"))
        assert node.stats["published"] == 0


def test_garbage_on_the_bus_never_stops_the_retrieval_node(gallery: Gallery):
    import zmq

    from brainstream.realtime.bus import encode

    front, back = _endpoints()
    rng = np.random.default_rng(5)
    with (
        Broker(front, back),
        RetrievalNode(gallery, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None) as node,
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("retrieval",)) as sub,
    ):
        assert _publish_until(pub, sub, "embedding.s", gallery.embeddings[3], space=SPACE) is not None
        raw = zmq.Context.instance().socket(zmq.PUB)
        raw.connect(front)
        try:
            probe = encode("embedding.x", [gallery.embeddings[0]], seq=0, src="fuzz:1", space="other-space")
            deadline = time.monotonic() + 10
            while node.stats["space_mismatch"] == 0:  # the raw socket has joined: the node hears it
                raw.send_multipart(probe)
                time.sleep(0.02)
                assert time.monotonic() < deadline
            for _ in range(100):
                raw.send_multipart([b"embedding.x", *[rng.bytes(int(rng.integers(0, 50))) for _ in range(3)]])
            # well-formed on the wire, wrong for the topic: text-like bytes, 2-D, float64
            for arrays in ([np.zeros((2, 64), np.float32)], [np.zeros(64)], [], [np.zeros(64, np.uint8)]):
                raw.send_multipart(encode("embedding.x", arrays, seq=0, src="fuzz:1", space=SPACE))
        finally:
            raw.close(linger=100)
        deadline = time.monotonic() + 10
        msg = None
        while msg is None or msg.get("true_image_id") != gallery.ids[9]:  # skip answers still queued
            msg = _publish_until(
                pub, sub, "embedding.s", gallery.embeddings[9], space=SPACE, image_id=gallery.ids[9]
            )
            assert time.monotonic() < deadline, "the node stopped answering after the garbage"
        assert msg.get("ids")[0] == gallery.ids[9]
        assert node.running
        # the node's counters are copied by its worker thread: give the copy a moment to catch up
        deadline = time.monotonic() + 5
        while not (node.stats["bus_malformed"] >= 90 and node.stats["bad_payload"] >= 4):
            assert time.monotonic() < deadline, node.stats
            time.sleep(0.05)


def test_retrieve_verb_runs_as_a_process_and_stops_cleanly_on_sigterm(gallery: Gallery):
    import signal
    import socket
    import subprocess
    import sys

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    front, back = f"tcp://127.0.0.1:{port()}", f"tcp://127.0.0.1:{port()}"
    root = Path(__file__).resolve().parents[2]
    argv = [sys.executable, "-m", "brainstream", "retrieve", "--gallery", str(gallery.root), "--k", "2"]
    with (
        Broker(front, back),
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("retrieval",)) as sub,
    ):
        proc = subprocess.Popen(
            [*argv, "--sub", back, "--pub", front], cwd=root, stderr=subprocess.PIPE, text=True
        )
        try:
            msg = _publish_until(pub, sub, "embedding.s", gallery.embeddings[5], timeout=60, space=SPACE)
            assert msg is not None and msg.get("ids") == [gallery.ids[5], msg.get("ids")[1]]
            (src,) = {s for s, p in sub.publishers().items() if p["name"] == "retrieval"}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, proc.stderr.read()
            deadline = time.monotonic() + 5
            while sub.publishers()[src]["state"] != "stopped":  # said goodbye: not counted as lost
                sub.recv(timeout=0.1)
                assert time.monotonic() < deadline
        finally:
            proc.kill()
            proc.wait()


def test_rank_among_the_test_images_is_n_way_retrieval(gallery: Gallery):
    retriever = Retriever(gallery)
    tests = gallery.ids[:20]
    query = gallery.embeddings[0] + 0.8 * gallery.embeddings[1] + 0.7 * gallery.embeddings[2]
    scores = gallery.embeddings[:20] @ query
    for k in range(3):
        assert retriever.rank_among(query, tests[k], tests) == int(np.sum(scores > scores[k]))
    assert retriever.rank_among(query, tests[0], tests) == 0


def test_retrieval_node_reports_the_rank_among_the_sessions_test_images(gallery: Gallery):
    front, back = _endpoints()
    tests = gallery.ids[10:30]
    with pytest.raises(ValueError, match="not in the gallery"):
        RetrievalNode(gallery, test_images=["nope"], sub_endpoint=back, pub_endpoint=front)
    with (
        Broker(front, back),
        RetrievalNode(
            gallery, k=3, test_images=tests, sub_endpoint=back, pub_endpoint=front, heartbeat_interval=None
        ),
        Publisher(front, name="decoder", heartbeat_interval=None) as pub,
        Subscriber(back, topics=("retrieval",)) as sub,
    ):
        query = gallery.embeddings[12] + 0.8 * gallery.embeddings[11]  # img_0012 ranks above the truth
        msg = _publish_until(pub, sub, "embedding.sub-01", query / np.linalg.norm(query), t_sample=1.0,
                             space=SPACE, event=f"test/{tests[1]}", image_id=tests[1])  # fmt: skip
        assert msg is not None, "no retrieval answer"
        expected = Retriever(gallery).rank_among(query, tests[1], tests)
        assert msg.get("test_rank") == expected >= 1 and msg.get("n_test") == 20
        other = gallery.ids[50]  # not a test image: no test rank
        deadline = time.monotonic() + 10
        while (msg is None or msg.t_sample != 2.0) and time.monotonic() < deadline:  # past earlier answers
            msg = _publish_until(pub, sub, "embedding.sub-01", gallery.embeddings[50], t_sample=2.0,
                                 space=SPACE, image_id=other)  # fmt: skip
        assert msg.t_sample == 2.0 and msg.get("test_rank") is None and msg.get("true_image_id") == other


# ---------------------------------------------------------------------- index settings (faiss-ivf nprobe)
def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((int(np.sqrt(n)), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("target, dtype", [(0.8, "float32"), (0.99, "float16")])
def test_tuned_nprobe_is_the_fewest_lists_that_reach_the_target_recall(target: float, dtype: str):
    faiss = pytest.importorskip("faiss", reason="FAISS is an optional extra: pip install brainstream[faiss]")
    from brainstream.models.retrieval import FaissIndex, exact_top_k, noisy_views, recall_at_k, tune_nprobe

    del faiss
    gallery = _clustered(4000)
    index = FaissIndex(gallery, "ivf", nlist=64, dtype=dtype)
    validation, test = noisy_views(gallery, 150, seed=1), noisy_views(gallery, 150, seed=2)
    tuned = tune_nprobe(index, gallery, validation, k=5, target_recall=target)
    assert tuned["recall"] >= target and index.nprobe == tuned["nprobe"]
    probes = [p for p, _ in tuned["tried"]]
    assert probes == sorted(probes) and probes[-1] == tuned["nprobe"]
    assert all(r < target for _, r in tuned["tried"][:-1])  # every smaller candidate fell short
    # held-out queries of the same kind land near the validation recall (tuned on one, scored on another)
    found = index.search(test, 5)[1]
    assert recall_at_k(found, exact_top_k(gallery, test, 5)) >= target - 0.1
    if tuned["nprobe"] < index.nlist:
        index.nprobe = index.nlist  # probing every list is exact search
        assert recall_at_k(index.search(test, 5)[1], exact_top_k(gallery, test, 5)) == 1.0


def test_retriever_tunes_nprobe_on_the_validation_queries_it_is_given(tmp_path, monkeypatch):
    pytest.importorskip("faiss", reason="FAISS is an optional extra: pip install brainstream[faiss]")
    import brainstream.models.retrieval as retrieval

    monkeypatch.setattr(retrieval, "IVF_EXACT_UP_TO", 1000)  # a test-sized "large" gallery
    emb = _clustered(3000)
    g = Gallery.save(tmp_path / "g", embeddings=emb, ids=[f"i{j}" for j in range(3000)], space=SPACE,
                     embedder="random")  # fmt: skip
    auto = retrieval.Retriever(g, backend="faiss-ivf", validation_queries=retrieval.noisy_views(emb, 100, 4))
    assert auto.tuning is not None and auto.tuning["queries"] == "decoded validation embeddings"
    assert auto.tuning["recall"] >= 0.95 and auto.index.nprobe == auto.tuning["nprobe"]
    fixed = retrieval.Retriever(g, backend="faiss-ivf", nprobe=3)
    assert fixed.tuning is None and fixed.index.nprobe == 3
    with pytest.raises(ValueError, match=r"\(n, 32\) embeddings of the gallery's space"):
        retrieval.Retriever(g, backend="faiss-ivf", validation_queries=np.zeros((5, 7), np.float32))
    with pytest.raises(ValueError, match="nprobe must be between 1 and nlist"):
        retrieval.Retriever(g, backend="faiss-ivf", nprobe=10_000)
    with pytest.raises(ValueError, match="faiss-ivf only"):
        retrieval.Retriever(g, backend="exact", nprobe=4)


def test_pipeline_retrieval_settings_reach_the_retrieval_node(tmp_path):
    """``retrieval:`` of a pipeline config becomes the retrieve node's options; nonsense is refused."""
    import yaml

    from brainstream.models.config_base import ConfigError, resolve_config_path
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.graph import SessionPlan, session_nodes

    base = yaml.safe_load(resolve_config_path("demo_meg", "pipelines").read_text())
    base["retrieval"] = {"index": "faiss-ivf", "nprobe": 12, "nlist": 300, "validation_queries": "val.npy"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base))
    config = load_pipeline_config(path)
    plan = SessionPlan(run_dir=tmp_path, config_path=path, display=False)
    (retrieve,) = [n for n in session_nodes(config, plan) if n.name == "retrieval"]
    argv = list(retrieve.argv)
    for option, value in [("--backend", "faiss-ivf"), ("--nprobe", "12"), ("--nlist", "300"),
                          ("--validation-queries", str(tmp_path / "val.npy"))]:  # fmt: skip
        assert argv[argv.index(option) + 1] == value
    base["retrieval"] = {"index": "exact", "nprobe": 4}
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match="apply to index: faiss-ivf, not exact"):
        load_pipeline_config(path)


def test_the_generator_runs_at_normal_priority_only_for_event_locked_windows(tmp_path):
    """One image per onset: the generator is not the bulk consumer and keeps normal priority; with sliding
    windows it renders 10 images a second and keeps its own lower default (``generate --nice``)."""
    from brainstream.models.config_base import resolve_config_path
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.graph import SessionPlan, session_nodes

    for name, expected in (("demo_meg", ["--nice", "0"]), ("demo_meg_continuous", None)):
        path = resolve_config_path(name, "pipelines")
        plan = SessionPlan(run_dir=tmp_path, config_path=path, display=False)
        (generator,) = [n for n in session_nodes(load_pipeline_config(path), plan) if n.name == "generator"]
        argv = list(generator.argv)
        if expected is None:
            assert "--nice" not in argv
        else:
            assert argv[argv.index("--nice") : argv.index("--nice") + 2] == expected


def test_retrieve_verb_refuses_a_bad_nprobe_in_one_line(gallery: Gallery):
    import subprocess
    import sys

    argv = [sys.executable, "-m", "brainstream", "retrieve", "--gallery", str(gallery.root), "--nprobe", "x"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--nprobe must be a positive integer or 'auto', got 'x'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_service_compares_times_of_its_own_hosts_clock_only(gallery: Gallery):
    """An embedding stamped on another host cannot be timed against this host's clock without an offset:
    the node counts it instead (the session's collector corrects such latencies)."""
    from pylsl import local_clock

    node = RetrievalNode(gallery)
    now = local_clock()
    node.record_latency(now - 0.05, now, host=node.host)
    node.record_latency(now - 0.05, now, host=None)  # a message from before hosts were stamped
    node.record_latency(now - 0.05, now, host=f"{node.host}-elsewhere")
    stats = node.stats
    assert stats["latency_ms"]["n"] == 2 and stats["latency_ms"]["p50_ms"] >= 50.0
    assert stats["uncorrected_latencies"] == 1 and stats["compute_ms"]["n"] == 3
