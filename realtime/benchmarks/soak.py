"""``brainstream bench soak --minutes N``: the demo graph for a long while; memory of every process and the
latency percentiles per block of minutes, and how they grow.

Goals (docs/benchmarks.md): under 20 MB growth per process per hour, the last block's p99 within 25 % of the
first block's, no dropped samples. Memory is each process's resident set (RSS) sampled every
``--sample-s`` seconds; growth is the least-squares slope over the samples after the first block (start-up
allocations and caches excluded), in MB per hour, beside the plain difference last − first after warm-up.
Each block's row is appended to ``soak.json`` in the run folder as soon as the block ends, so a run that is
cut short keeps what it measured; every window's push → embedding latency goes to ``latencies.json``.

A block's p99 over ~200 windows (the demo's pace) is about its 2nd-largest window, so it follows single
scheduling hiccups. Beside the ratio the goal names, :func:`stability` gives its bootstrap CI (windows
resampled within each block), the same for the p95, and Kendall's tau of the block p99s against time: a
drift shows as a ratio whose CI lies above 1.25 together with a rising trend, a hiccup as neither.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from brainstream.realtime.session.collector import percentiles

HELP = "the demo graph for N minutes: memory per process and latency percentiles per block, with growth"

GOAL_MB_PER_HOUR = 20.0
GOAL_P99_RATIO = 1.25
N_BOOTSTRAP = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--block-minutes", type=float, default=5.0, help="block length (default 5)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="memory sampling period (default 10)")
    parser.add_argument("--run-dir", default=None, help="session outputs (default runs/soak-<time>)")
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="the continuous demo (a window every 100 ms: ~3000 per 5-minute block, so a block's p99 is its "
        "30th-largest window, not its 2nd)",
    )


class SoakMonitor:
    """Called by the demo session loop: samples memory, closes a block every ``block_s`` seconds.

    Parameters
    ----------
    block_s, sample_s : float
        Block length and memory sampling period (seconds).
    out : Path
        ``soak.json``, rewritten after every block.
    """

    def __init__(self, block_s: float, sample_s: float, out: Path) -> None:
        if block_s <= 0 or sample_s <= 0:
            raise ValueError(f"block and sample periods must be > 0 s, got {block_s} and {sample_s}")
        self.block_s, self.sample_s, self.out = block_s, sample_s, out
        self.memory: dict[str, list[tuple[float, float, int]]] = {}  # name -> [(t, rss MB, pid)]
        self.blocks: list[dict] = []
        self._next_sample = 0.0
        self._cursors = {"push": 0, "retrieval": 0, "image": 0}
        self.push_by_block: list[np.ndarray] = []  # every window's push → embedding latency, per block
        self._dropped_total = 0
        self._last_decoder: dict = {}
        self._procs: dict[int, object] = {}

    def __call__(self, elapsed: float, collector, supervisor) -> None:
        if elapsed >= self._next_sample:
            self._sample_memory(elapsed, {**supervisor.pids(), "bench": os.getpid()})
            self._next_sample = elapsed + self.sample_s
        self._track_drops(collector.last_status.get("decoder") or {})
        if elapsed >= (len(self.blocks) + 1) * self.block_s:
            self._close_block(elapsed, collector, supervisor)

    def _sample_memory(self, t: float, pids: dict[str, int]) -> None:
        import psutil

        for name, pid in pids.items():
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.memory.setdefault(name, []).append((t, rss, pid))

    def _track_drops(self, decoder: dict) -> None:
        # a restarted decoder starts its counters at 0 again: count from there
        def lost(stats: dict) -> int:
            return int(stats.get("dropped_samples", 0) or 0) + int(
                stats.get("stream_missing_samples", 0) or 0
            )

        now, before = lost(decoder), lost(self._last_decoder)
        self._dropped_total += now - before if now >= before else now
        self._last_decoder = decoder

    def _take(self, key: str, values: Sequence[float]) -> np.ndarray:
        start, self._cursors[key] = self._cursors[key], len(values)
        return np.asarray(values[start:], dtype=np.float64)

    def _close_block(self, elapsed: float, collector, supervisor) -> None:
        push = self._take("push", collector.push_to_embedding_ms)
        retrieval = self._take("retrieval", collector.stage_ms.get("retrieval", []))
        image = self._take("image", collector.stage_ms.get("generator", []))
        self.push_by_block.append(push)
        previous = self.blocks[-1]["dropped_samples_total"] if self.blocks else 0
        self.blocks.append(
            {
                "block": len(self.blocks) + 1,
                "end_min": round(elapsed / 60, 2),
                "windows": len(push),
                "push_to_embedding_ms": percentiles(push),
                "sample_to_retrieval_ms": percentiles(retrieval),
                "sample_to_image_ms": percentiles(image),
                "dropped_samples": self._dropped_total - previous,
                "dropped_samples_total": self._dropped_total,
                "rss_mb": {name: round(series[-1][1], 1) for name, series in self.memory.items() if series},
                "restarts": {n: s["restarts"] for n, s in supervisor.status().items()},
            }
        )
        self.out.write_text(json.dumps({"blocks": self.blocks}, indent=1))

    def growth(self) -> dict[str, dict]:
        """Per process: MB/hour slope and last − first after the first block (same pid only)."""
        out = {}
        warm = self.block_s if len(self.blocks) > 1 else 0.2 * max(self.block_s, 1.0)
        for name, series in self.memory.items():
            pid = series[-1][2]
            pts = [(t, mb) for t, mb, p in series if t >= warm and p == pid]
            if len(pts) < 3:
                continue
            t = np.array([p[0] for p in pts]) / 3600.0
            mb = np.array([p[1] for p in pts])
            slope = float(np.polyfit(t, mb, 1)[0]) if np.ptp(t) > 0 else 0.0
            out[name] = {
                "first_mb": round(float(mb[0]), 1),
                "last_mb": round(float(mb[-1]), 1),
                "delta_mb": round(float(mb[-1] - mb[0]), 1),
                "mb_per_hour": round(slope, 1),
                "restarted": any(p != pid for _, _, p in series),
            }
        return out


def _bootstrap_ratio(first: np.ndarray, last: np.ndarray, q: float, rng: np.random.Generator) -> list[float]:
    """95 % CI of ``percentile(last, q) / percentile(first, q)``, windows resampled within each block."""
    a = np.percentile(rng.choice(first, (N_BOOTSTRAP, len(first))), q, axis=1)
    b = np.percentile(rng.choice(last, (N_BOOTSTRAP, len(last))), q, axis=1)
    return [float(v) for v in np.percentile(b / a, [2.5, 97.5])]


def stability(push_by_block: Sequence[Sequence[float]], seed: int = 0) -> dict[str, object]:
    """How the push → embedding tail moved from the first block to the last, with its uncertainty.

    Returns the last/first ratios of the p99 and the p95 with bootstrap 95 % CIs, and Kendall's tau (and
    its p-value) of the block p99s against block order: a drift, not a single slow block, makes it rise.
    """
    from scipy.stats import kendalltau

    blocks = [np.asarray(b, dtype=np.float64) for b in push_by_block if len(b)]
    if len(blocks) < 2:
        return {"blocks": len(blocks)}
    rng = np.random.default_rng(seed)
    first, last = blocks[0], blocks[-1]
    p99 = [float(np.percentile(b, 99)) for b in blocks]
    tau = kendalltau(np.arange(len(p99)), p99)
    return {
        "blocks": len(blocks),
        "p99_ratio": p99[-1] / p99[0],
        "p99_ratio_ci": _bootstrap_ratio(first, last, 99, rng),
        "p95_ratio": float(np.percentile(last, 95) / np.percentile(first, 95)),
        "p95_ratio_ci": _bootstrap_ratio(first, last, 95, rng),
        "p99_trend_tau": float(tau.statistic),
        "p99_trend_p": float(tau.pvalue),
    }


def run(args: argparse.Namespace) -> dict:
    from brainstream.realtime.session.demo_session import CONTINUOUS_CONFIG, DEMO_CONFIG, run_demo_session

    if args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    run_dir = Path(args.run_dir or Path("runs") / f"soak-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    monitor = SoakMonitor(args.block_minutes * 60, args.sample_s, run_dir / "soak.json")
    t0 = time.time()
    config = CONTINUOUS_CONFIG if args.continuous else DEMO_CONFIG
    session = run_demo_session(
        args.minutes * 60, run_dir, headless=True, quiet=False, config=config, monitor=monitor, isolated=True
    )
    growth = monitor.growth()
    blocks = monitor.blocks
    first = blocks[0]["push_to_embedding_ms"]["p99"] if blocks else None
    last = blocks[-1]["push_to_embedding_ms"]["p99"] if blocks else None
    ratio = (last / first) if first and last else None
    latencies = {"push_to_embedding_ms": [b.tolist() for b in monitor.push_by_block]}
    (run_dir / "latencies.json").write_text(json.dumps(latencies))
    worst_growth = max((g["mb_per_hour"] for g in growth.values()), default=None)
    result = {
        "minutes": args.minutes,
        "config": config,
        "started": datetime.fromtimestamp(t0).isoformat(timespec="seconds"),
        "blocks": blocks,
        "memory_growth": growth,
        "p99_last_over_first": ratio,
        "tail_stability": stability(monitor.push_by_block),
        "dropped_samples": monitor._dropped_total,
        "session": {k: session[k] for k in ("windows", "dropped_samples", "dropped_messages", "restarts")},
        "goals": {
            "growth_mb_per_hour_max": worst_growth,
            "growth_ok": worst_growth is not None and worst_growth < GOAL_MB_PER_HOUR,
            "p99_ok": ratio is not None and ratio <= GOAL_P99_RATIO,
            "drops_ok": monitor._dropped_total == 0,
        },
        "run_dir": str(run_dir),
    }
    (run_dir / "soak.json").write_text(json.dumps(result, indent=1))
    print_table(result)
    return result


def print_table(result: dict) -> None:
    names = sorted({n for b in result["blocks"] for n in b["rss_mb"]})
    print(
        f"{'block':>5s} {'end':>6s} {'windows':>7s} {'p2e p50':>8s} {'p2e p99':>8s} {'retr p99':>8s} "
        f"{'drops':>5s}  RSS MB: " + " ".join(f"{n[:10]:>10s}" for n in names)
    )

    def f(v: float | None) -> str:
        return f"{v:8.1f}" if v is not None else f"{'n/a':>8s}"

    for b in result["blocks"]:
        p2e = b["push_to_embedding_ms"]
        print(
            f"{b['block']:5d} {b['end_min']:6.1f} {b['windows']:7d} {f(p2e['p50'])} {f(p2e['p99'])} "
            f"{f(b['sample_to_retrieval_ms']['p99'])} {b['dropped_samples']:5d}          "
            + " ".join(f"{b['rss_mb'].get(n, float('nan')):10.1f}" for n in names)
        )
    print("memory growth after the first block (MB/hour, least squares):")
    for name, g in sorted(result["memory_growth"].items()):
        print(f"  {name:16s} {g['mb_per_hour']:8.1f}  ({g['first_mb']} → {g['last_mb']} MB)")
    tail = result.get("tail_stability") or {}
    if "p99_ratio_ci" in tail:
        p99_lo, p99_hi = tail["p99_ratio_ci"]
        p95_lo, p95_hi = tail["p95_ratio_ci"]
        print(
            f"push→embedding last/first block: p99 {tail['p99_ratio']:.2f} (CI {p99_lo:.2f}-{p99_hi:.2f}), "
            f"p95 {tail['p95_ratio']:.2f} (CI {p95_lo:.2f}-{p95_hi:.2f}); block p99 trend: Kendall tau "
            f"{tail['p99_trend_tau']:.2f} (p = {tail['p99_trend_p']:.2f})"
        )
    print(f"goals: {json.dumps(result['goals'])}")
