"""What a second OpenBLAS thread costs a node that answers ten times a second: the exact search's product
(one query against a gallery of ``--n`` 768-d float32 rows) every 100 ms, on one and on two BLAS threads
measured in the same process, one after the other.

    python scripts/blas_spin.py --n 20000 [--queries 50] [--period 0.1]

An idle OpenBLAS worker spins for a while after each product before it sleeps, so between queries it keeps
a core busy. Prints one JSON object per thread count: the product's p50 in ms and the process's CPU time
over the run in percent of one core (user + system, from ``getrusage``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from threadpoolctl import threadpool_limits


def measure(gallery: np.ndarray, query: np.ndarray, threads: int, queries: int, period: float) -> dict:
    """Time ``queries`` products ``period`` seconds apart on ``threads`` BLAS threads."""
    with threadpool_limits(limits=threads, user_api="blas"):
        took = []
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        for _ in range(queries):
            t = time.perf_counter()
            query @ gallery.T
            took.append(time.perf_counter() - t)
            time.sleep(period)
        after, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / (t1 - t0)
    return {
        "threads": threads,
        "product_p50_ms": round(float(np.median(took)) * 1e3, 2),
        "cpu_percent": round(cpu * 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="gallery images")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--period", type=float, default=0.1, help="seconds between queries")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.n, 768)).astype(np.float32)
    query = rng.standard_normal((1, 768)).astype(np.float32)
    for threads in (1, 2):
        print(json.dumps({"n": args.n, **measure(gallery, query, threads, args.queries, args.period)}))


if __name__ == "__main__":
    main()
