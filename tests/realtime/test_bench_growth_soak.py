"""The soak's block bookkeeping and the growth benchmark's retrieval part, on small inputs (fast)."""

from __future__ import annotations

import numpy as np
import pytest


class _Collector:
    def __init__(self) -> None:
        self.push_to_embedding_ms: list[float] = []
        self.stage_ms: dict[str, list[float]] = {"retrieval": [], "generator": []}
        self.last_status: dict[str, dict] = {}


class _Supervisor:
    def pids(self) -> dict[str, int]:
        import os

        return {"me": os.getpid()}

    def status(self) -> dict:
        return {"me": {"restarts": 0}}


def test_soak_blocks_count_each_window_once_and_drops_across_a_restart(tmp_path):
    from brainstream.realtime.benchmarks.soak import SoakMonitor

    monitor = SoakMonitor(block_s=10.0, sample_s=1.0, out=tmp_path / "soak.json")
    col, sup = _Collector(), _Supervisor()
    col.push_to_embedding_ms += [5.0] * 10
    col.last_status["decoder"] = {"dropped_samples": 3}
    monitor(5.0, col, sup)
    monitor(10.0, col, sup)  # block 1 closes: 10 windows, 3 dropped
    col.push_to_embedding_ms += [7.0] * 4
    col.last_status["decoder"] = {"dropped_samples": 1}  # a restarted decoder counts from 0 again
    monitor(20.0, col, sup)
    assert [b["windows"] for b in monitor.blocks] == [10, 4]
    assert [b["dropped_samples"] for b in monitor.blocks] == [3, 1]
    assert monitor.blocks[1]["push_to_embedding_ms"]["p50"] == 7.0
    assert "me" in monitor.blocks[0]["rss_mb"] and (tmp_path / "soak.json").exists()
    assert [b.tolist() for b in monitor.push_by_block] == [[5.0] * 10, [7.0] * 4]


def test_soak_stability_tells_a_drift_from_blocks_of_one_distribution():
    from brainstream.realtime.benchmarks.soak import stability

    rng = np.random.default_rng(3)
    steady = [list(rng.gamma(9.0, 0.7, 200)) for _ in range(12)]
    flat = stability(steady)
    assert flat["blocks"] == 12
    assert flat["p95_ratio_ci"][0] < 1.0 < flat["p95_ratio_ci"][1]
    assert flat["p99_ratio_ci"][0] < flat["p99_ratio"] < flat["p99_ratio_ci"][1]
    drifting = [list(rng.gamma(9.0, 0.7, 200) * (1.0 + 0.1 * k)) for k in range(12)]
    drift = stability(drifting)
    assert drift["p99_ratio_ci"][0] > 1.25 and drift["p95_ratio_ci"][0] > 1.25
    assert drift["p99_trend_tau"] > 0.5 and drift["p99_trend_p"] < 0.01
    assert stability([[5.0]]) == {"blocks": 1}


def test_growth_retrieval_rows_report_recall_against_exact_float32():
    from brainstream.realtime.benchmarks.growth import DIM, retrieval_rows, synthetic_gallery

    gallery, queries = synthetic_gallery(500, 20)
    assert gallery.shape == (500, DIM) and np.allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
    rows = retrieval_rows([500], n_queries=20, hnsw_max=0)
    by_index = {r["index"]: r for r in rows}
    assert 0.9 <= by_index["exact float16"]["recall_at_5"] <= 1.0
    if "faiss-ivf" in by_index:  # the faiss extra: IVF probes every list at this size, so it is exact
        assert by_index["faiss-ivf"]["recall_at_5"] == pytest.approx(1.0)
    assert all(r["p50_ms"] > 0 for r in rows)
