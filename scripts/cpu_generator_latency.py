"""Generator stage latency on the CPU: the demo generator (with its embedding prior, as the node runs it)
against the tiny random generator measured in the same process, interleaved, one image at a time.

    python scripts/cpu_generator_latency.py --n 200 [--config demo] [--baseline tiny]

Each generation takes one demo-gallery embedding (decoded embeddings cost the same); the configs'
``cpu_threads`` apply (1 for both). Prints one JSON object: p50 / p99 / mean in ms per config and the load
average before and after, since a shared machine inflates every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--baseline", default="tiny")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)

    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery
    from brainstream.models.generation import load_generator

    gallery = Gallery.load(default_gallery_dir())
    rng = np.random.default_rng(0)
    rows = gallery.embeddings[rng.integers(0, len(gallery.ids), size=args.n)]
    generators = {name: load_generator(name) for name in (args.config, args.baseline)}
    for gen in generators.values():
        for e in rows[: args.warmup]:
            gen.generate(e, gen.space)
    times: dict[str, list[float]] = {name: [] for name in generators}
    load_before = os.getloadavg()
    for e in rows:
        for name, gen in generators.items():
            t0 = time.perf_counter()
            gen.generate(e, gen.space)
            times[name].append(1000 * (time.perf_counter() - t0))
    out = {
        name: {
            "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p99_ms": round(float(np.percentile(t, 99)), 2),
            "mean_ms": round(float(np.mean(t)), 2),
            "n": len(t),
        }
        for name, t in times.items()
    }
    out["loadavg_before"], out["loadavg_after"] = load_before, os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
