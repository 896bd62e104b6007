"""``brainstream bench growth``: how cost grows with the work.

**Retrieval**: top-5 latency per query (one query at a time, as the retrieval node answers) and recall@5
against exact float32 search, for galleries of 1k / 10k / 100k / 1M embeddings (768-d), with exact search over
float16 storage (the baseline) and the FAISS indexes (``faiss-ivf``, ``faiss-hnsw``,
built as the retrieval node builds them; the ``faiss`` extra). The gallery is synthetic but shaped like an
image-embedding space: unit vectors around ~sqrt(N) cluster centres (images of the same concept), and each
query is a gallery row plus noise as large as the row itself (a decoded embedding is a noisy view of the
seen image). Beyond 100k images IVF's ``nprobe`` is tuned as the node tunes it
(:func:`models.retrieval.tune_nprobe`, target recall@5 0.95) on validation queries drawn with another seed
than the timed test queries; a sweep of fixed values is shown beside it. HNSW is built up to ``--hnsw-max``
rows only: on 2 cores its build takes hours at 1M.

**Decoder**: push → embedding on the bus (sliding windows every 50 ms, the demo-size brain module on ONNX
Runtime, 1200 Hz streams in 10 ms chunks pushed by separate processes) against the channel count (64 / 128 /
272 / 306, one stream) and against the number of concurrent streams (1 / 2 / 4 streams of 272 channels,
each decoded by its own :class:`~realtime.decoder.node.DecoderNode` in this one process, so they share its
GIL as well as the cores). Weights are random: only the timing matters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HELP = (
    "cost against size: retrieval over 1k-1M embeddings (exact, FAISS), decoder against channels and streams"
)

DIM = 768
IVF_NPROBE_SWEEP = (4, 8, 16, 32, 64)  # fixed lists probed, beside the tuned value
RATE, CHUNK_MS = 1200.0, 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="queries per gallery (default 200)")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest gallery given an HNSW index")
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128, 272, 306])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=20.0, help="streaming time per decoder row (s)")
    parser.add_argument("--skip", choices=["retrieval", "decoder"], default=None, help="leave one part out")


# --------------------------------------------------------------------------------------------- retrieval
def synthetic_gallery(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(gallery (n, DIM) float32 unit rows, queries (n_queries, DIM))``: clustered rows, and queries that
    are noisy views of random rows (:func:`models.retrieval.noisy_views`, the node's tuning queries too)."""
    from brainstream.models.retrieval import noisy_views

    rng = np.random.default_rng(seed)
    n_clusters = max(1, int(np.sqrt(n)))
    centres = rng.standard_normal((n_clusters, DIM), dtype=np.float32)
    gallery = np.empty((n, DIM), np.float32)
    step = 100_000  # in blocks: 1M rows of noise at once would double the peak memory
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = centres[rng.integers(0, n_clusters, stop - start)]
        block += 0.7 * rng.standard_normal(block.shape, dtype=np.float32)
        gallery[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return gallery, noisy_views(gallery, n_queries, seed=seed)


def _time_queries(index, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, dict[str, float]]:
    index.search(queries[:3], k)  # warm caches and lazy allocations
    found = np.empty((len(queries), k), np.int64)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        _, idx = index.search(q, k)
        times[i] = (time.perf_counter() - t0) * 1e3
        found[i] = idx[0]
    p50, p99 = np.percentile(times, [50, 99])
    return found, {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(times.max())}


def retrieval_rows(sizes: list[int], n_queries: int, hnsw_max: int) -> list[dict]:
    from tqdm import tqdm

    from brainstream.models.retrieval import (
        IVF_EXACT_UP_TO,
        build_index,
        exact_top_k,
        faiss_available,
        noisy_views,
        recall_at_k,
        tune_nprobe,
    )

    backends = ["faiss-ivf", "faiss-hnsw"] if faiss_available() else []
    if not backends:
        print("faiss is not installed (pip install 'brainstream[faiss]'): exact search only", file=sys.stderr)
    rows = []
    for n in tqdm(sizes, desc="retrieval galleries", unit="gallery"):
        gallery, queries = synthetic_gallery(n, n_queries)
        truth = exact_top_k(gallery, queries, 5)
        exact_index = build_index(gallery, "exact", dtype="float16")
        found, timing = _time_queries(exact_index, queries)
        rows.append({"n": n, "index": "exact float16", "build_s": 0.0, **timing,
                     "recall_at_5": recall_at_k(found, truth)})  # fmt: skip
        del exact_index
        for backend in backends:
            if backend == "faiss-hnsw" and n > hnsw_max:
                continue
            t0 = time.perf_counter()
            # IVF stores float16 like the exact baseline; HNSW has float32 storage only
            index = build_index(gallery, backend, dtype="float16" if backend == "faiss-ivf" else "float32")
            build_s = time.perf_counter() - t0
            found, timing = _time_queries(index, queries)
            rows.append({"n": n, "index": backend, "build_s": round(build_s, 1), **timing,
                         "recall_at_5": recall_at_k(found, truth)})  # fmt: skip
            if backend == "faiss-ivf" and n > IVF_EXACT_UP_TO:
                validation = noisy_views(gallery, n_queries, seed=1)  # not the timed test queries (seed 0)
                tuned = tune_nprobe(index, gallery, validation, k=5, target_recall=0.95)
                found, timing = _time_queries(index, queries)
                rows.append({"n": n, "index": f"faiss-ivf nprobe {tuned['nprobe']} (tuned)", "build_s": 0.0,
                             **timing, "recall_at_5": recall_at_k(found, truth),
                             "validation_recall_at_5": tuned["recall"]})  # fmt: skip
                import faiss  # the node searches one query on one thread: check that against two

                faiss.omp_set_num_threads(2)
                found, timing = _time_queries(index, queries)
                faiss.omp_set_num_threads(1)
                rows.append({"n": n, "index": f"faiss-ivf nprobe {tuned['nprobe']}, 2 threads",
                             "build_s": 0.0, **timing, "recall_at_5": recall_at_k(found, truth)})  # fmt: skip
                for nprobe in IVF_NPROBE_SWEEP:
                    index.nprobe = nprobe
                    found, timing = _time_queries(index, queries)
                    rows.append({"n": n, "index": f"faiss-ivf nprobe {nprobe}", "build_s": 0.0, **timing,
                                 "recall_at_5": recall_at_k(found, truth)})  # fmt: skip
            del index
        del gallery
    return rows


# ----------------------------------------------------------------------------------------------- decoder
def decoder_row(n_channels: int, n_streams: int, seconds: float, folder: Path) -> dict:
    """Push → embedding for ``n_streams`` concurrent streams of ``n_channels`` (all windows pooled)."""
    import subprocess

    import pylsl

    from brainstream.models.runtime import load_runtime
    from brainstream.realtime.acquisition import StreamReader
    from brainstream.realtime.benchmarks.decode import _checkpoint
    from brainstream.realtime.bus import Publisher, Subscriber
    from brainstream.realtime.decoder.node import DecoderNode

    ch_names = [f"CH{i:03d}" for i in range(n_channels)]
    where = folder / f"ch{n_channels}"
    checkpoint = where / "demo" if (where / "demo").exists() else _checkpoint("demo", ch_names, where)
    endpoint = f"ipc://{folder}/bus-{uuid.uuid4().hex[:6]}"
    subscriber = Subscriber(endpoint, topics=("embedding.",), bind=True)
    names = [f"bench-growth-{uuid.uuid4().hex[:8]}" for _ in range(n_streams)]
    pushers = [
        subprocess.Popen([sys.executable, "-m", "brainstream.realtime.benchmarks._pusher", name,
                          str(n_channels), str(RATE), str(CHUNK_MS), str(seconds)])
        for name in names
    ]  # fmt: skip
    nodes, publishers = [], []
    chunk = int(round(RATE * CHUNK_MS / 1000))
    latencies: list[float] = []
    try:
        for i, name in enumerate(names):
            runtime, meta = load_runtime(checkpoint, "onnxruntime")
            publisher = Publisher(endpoint, name=f"decoder{i}", heartbeat_interval=None)
            publishers.append(publisher)
            reader = StreamReader(name, timeout=20.0, processing_flags=["clocksync"])
            nodes.append(
                DecoderNode(reader, runtime, meta, publisher, subject=f"s{i}", mode="sliding").start()
            )
        first: dict[str, float] = {}
        deadline = time.monotonic() + seconds + 20
        while any(p.poll() is None for p in pushers) and time.monotonic() < deadline:
            for i, node in enumerate(nodes):
                if f"s{i}" not in first and node.reader.buffer.n_written:
                    first[f"s{i}"] = float(node.reader.buffer.read_since(0, max_samples=1).timestamps[0])
            msg = subscriber.recv(timeout=0.2)
            subject = msg.topic.split(".", 1)[1] if msg is not None else None
            if subject in first:
                now = pylsl.local_clock()
                # each chunk's last sample is stamped with its push time (see realtime/benchmarks/_pusher.py)
                index = int(round((msg.t_sample - first[subject]) * RATE))
                pushed = first[subject] + ((index // chunk) * chunk + chunk - 1) / RATE
                latencies.append((now - pushed) * 1e3)
    finally:
        for node in nodes:
            node.stop()
        for p in pushers:
            p.kill()
        for pub in publishers:
            pub.close()
        subscriber.close()
    errors = [repr(n.error) for n in nodes if n.error is not None]
    if errors:
        raise RuntimeError(f"a decoder failed during the benchmark: {errors[0]}")
    lat = np.asarray(latencies)
    enc = [n.latency.summary()["encoder_p50_ms"] for n in nodes]
    return {
        "channels": n_channels,
        "streams": n_streams,
        "windows": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "encoder_p50_ms": float(np.mean(enc)),
        "dropped_samples": int(sum(n.dropped_samples for n in nodes)),
    }


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    result: dict = {"dim": DIM, "queries": args.queries}
    if args.skip != "retrieval":
        result["retrieval"] = rows = retrieval_rows(args.sizes, args.queries, args.hnsw_max)
        print(f"{'gallery':>9s} {'index':34s} {'build s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'recall@5':>8s}")
        for r in rows:
            print(f"{r['n']:9d} {r['index']:34s} {r['build_s']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['recall_at_5']:8.3f}")  # fmt: skip
    if args.skip != "decoder":
        plan = [(c, 1) for c in args.channels] + [
            (272, s) for s in args.streams if s != 1 or 272 not in args.channels
        ]
        rows = []
        with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
            for channels, streams in tqdm(plan, desc="decoder rows", unit="row"):
                rows.append(decoder_row(channels, streams, args.seconds, Path(tmp)))
        result["decoder"] = rows
        head = ("channels", "streams", "windows", "p50 ms", "p99 ms", "encoder ms")
        print(" ".join(f"{h:>10s}" for h in head))
        for r in rows:
            values = (
                r["channels"],
                r["streams"],
                r["windows"],
                r["p50_ms"],
                r["p99_ms"],
                r["encoder_p50_ms"],
            )
            print(
                " ".join(f"{v:10d}" if isinstance(v, int) else f"{v or float('nan'):10.2f}" for v in values)
            )
    return result
