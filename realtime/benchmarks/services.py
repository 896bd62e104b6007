"""``brainstream bench services``: latency per stage (retrieval, tiny generator) and one bus hop vs raw pyzmq.

Stages are measured as the pipeline measures them live: trace time − ``t_sample`` (LSL clock). A synthetic
"decoder" publishes embeddings at a fixed rate through a real broker on TCP loopback to the retrieval and
generator nodes (threads of this process), and a subscriber stands in for the display. The bus hop is one
message (a 1024-d float32 embedding) from a :class:`Publisher` to a :class:`Subscriber`, next to the same
bytes over bare pyzmq PUB/SUB, measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pylsl import local_clock

HELP = "latency per service stage (retrieval, tiny generator) and one bus hop next to bare pyzmq"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=int, default=100, help="embeddings sent through the services (default 100)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="embeddings per second (default 10)")
    parser.add_argument("--hop-n", type=int, default=1000, help="messages for the bus-hop comparison")
    parser.add_argument("--generator", default="tiny", help="generator config (default tiny, CPU)")
    parser.add_argument("--gallery-size", type=int, default=2000, help="synthetic gallery size for retrieval")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pcts(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(values_s) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def bus_hop(n: int, dim: int = 1024) -> dict[str, float]:
    """Median one-way time of one message: our Publisher/Subscriber vs bare pyzmq, TCP loopback."""
    import zmq

    from brainstream.realtime.bus import Publisher, Subscriber

    payload = np.random.default_rng(0).standard_normal(dim).astype(np.float32)

    ours_ep = f"tcp://127.0.0.1:{_free_port()}"
    ours: list[float] = []
    with (
        Publisher(ours_ep, name="hop", bind=True, heartbeat_interval=None) as pub,
        Subscriber(ours_ep, topics=("embedding.",), heartbeats=False) as sub,
    ):
        while sub.recv(0.05) is None:  # wait out the slow joiner
            pub.publish("embedding.bench", [payload])
        while sub.recv(0.05) is not None:
            pass
        for _ in range(n):
            t0 = local_clock()
            pub.publish("embedding.bench", [payload], t_sample=t0, space="bench", image_id=None)
            msg = sub.recv(1.0)
            if msg is not None:
                ours.append(local_clock() - t0)

    ctx = zmq.Context.instance()
    raw_ep = f"tcp://127.0.0.1:{_free_port()}"
    raw_pub, raw_sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    raw: list[float] = []
    try:
        raw_pub.bind(raw_ep)
        raw_sub.connect(raw_ep)
        raw_sub.setsockopt(zmq.SUBSCRIBE, b"embedding.")
        while not raw_sub.poll(50):
            raw_pub.send_multipart([b"embedding.bench", payload.tobytes()])
        while raw_sub.poll(50):
            raw_sub.recv_multipart()
        for _ in range(n):
            t0 = local_clock()
            raw_pub.send_multipart([b"embedding.bench", payload])
            if raw_sub.poll(1000):
                frames = raw_sub.recv_multipart()
                np.frombuffer(frames[1], dtype=np.float32)
                raw.append(local_clock() - t0)
    finally:
        raw_pub.close(linger=0)
        raw_sub.close(linger=0)
    return {"ours_p50_ms": _pcts(ours)["p50_ms"], "raw_pyzmq_p50_ms": _pcts(raw)["p50_ms"]}


def _synthetic_gallery(root: Path, n: int, dim: int, space: str):
    from brainstream.models.gallery import Gallery

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Gallery.save(
        root, embeddings=emb, ids=[f"g{i:06d}" for i in range(n)], space=space, embedder="bench"
    )


def services(n: int, rate: float, generator: Any, gallery_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-stage latencies; ``generator`` is a config name/path or a built Generator."""
    from brainstream.models.generation import Generator, load_generator
    from brainstream.realtime.bus import Broker, Publisher, Subscriber
    from brainstream.realtime.services import GeneratorNode, RetrievalNode

    gen = generator if isinstance(generator, Generator) else load_generator(generator)
    space = gen.space or "bench:any"
    front, back = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    lat: dict[str, list[float]] = {
        "retrieval": [],
        "generator": [],
        "retrieval_received": [],
        "image_received": [],
    }
    with tempfile.TemporaryDirectory(prefix="brainstream-bench-") as tmp:
        gallery = _synthetic_gallery(Path(tmp) / "gallery", gallery_size, gen.dim, space)
        bus = {"sub_endpoint": back, "pub_endpoint": front}
        with (
            Broker(front, back),
            RetrievalNode(gallery, k=5, **bus) as retrieval,
            GeneratorNode(gen, **bus) as generator_node,
            Publisher(front, name="decoder") as pub,
            Subscriber(back, topics=("retrieval", "image")) as sub,
        ):
            rng = np.random.default_rng(1)
            deadline = time.monotonic() + 30
            while sub.recv(0.3) is None:  # everyone connected
                pub.publish("embedding.bench", [gallery.embeddings[0]], space=space)
                if time.monotonic() > deadline:
                    raise RuntimeError("the service nodes did not answer within 30 s")
            time.sleep(0.5)
            while sub.recv(0.1) is not None:
                pass
            period = 1.0 / rate
            next_t = time.monotonic()
            sent, answered, last_id, last_image = 0, 0, None, None
            end = time.monotonic() + n * period + 5.0
            while time.monotonic() < end and not (sent == n and answered >= n and last_image == last_id):
                now = time.monotonic()
                if sent < n and now >= next_t:
                    row = int(rng.integers(len(gallery)))
                    t = local_clock()
                    pub.publish(
                        "embedding.bench",
                        [gallery.embeddings[row]],
                        t_sample=t,
                        trace=[["decoder", t]],
                        space=space,
                        image_id=f"{sent}:{gallery.ids[row]}",
                    )
                    last_id = f"{sent}:{gallery.ids[row]}"
                    sent += 1
                    next_t += period
                msg = sub.recv(timeout=max(0.0, min(next_t - time.monotonic(), 0.05)))
                if msg is None or msg.t_sample is None:
                    continue
                t_recv = local_clock()
                stage = "retrieval" if msg.topic == "retrieval" else "generator"
                answered += stage == "retrieval"
                last_image = msg.get("image_id") if stage == "generator" else last_image
                stage_t = dict((s, t) for s, t in msg.trace).get(stage)
                if stage_t is not None:
                    lat[stage].append(stage_t - msg.t_sample)
                lat["retrieval_received" if stage == "retrieval" else "image_received"].append(
                    t_recv - msg.t_sample
                )
            counts = {"sent": sent, "retrieval": retrieval.stats, "generator": generator_node.stats}
    return {name: _pcts(values) for name, values in lat.items()}, counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    hop = bus_hop(args.hop_n)
    stages, counts = services(args.n, args.rate, args.generator, args.gallery_size)
    print(f"services: {counts['sent']} embeddings at {args.rate:g} Hz, generator {str(args.generator)!r}")
    print(f"{'stage':<22}{'p50 ms':>10}{'p99 ms':>10}")
    for name, s in stages.items():
        print(f"{name:<22}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}")
    gen_stats = counts["generator"]
    print(
        f"generator: {gen_stats.get('images', 0)} images, {gen_stats.get('skipped', 0)} embeddings skipped "
        f"(newest-only); retrieval answered {counts['retrieval'].get('published', 0)}"
    )
    print(
        f"bus hop (1024-d float32, TCP loopback): ours p50 {hop['ours_p50_ms']:.3f} ms, "
        f"bare pyzmq p50 {hop['raw_pyzmq_p50_ms']:.3f} ms"
    )
    print("(timings on a shared machine are noisy; nodes run as threads of this process)")
    return {"stages": stages, "bus_hop": hop}
