"""Run the embedded demo graph for a while and summarise it (``brainstream demo``, ``bench latency``)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_CONFIG = "demo_meg"
STARTUP_TIMEOUT_S = 120.0  # longest wait for the decoder to come up before the demo's clock starts anyway


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _dropped_samples(decoder_stats: dict) -> int:
    """Samples lost before the decoder: ring-buffer overruns plus what the stream reader saw missing."""
    return int(decoder_stats.get("dropped_samples", 0)) + int(decoder_stats.get("stream_missing_samples", 0))


def _display_drops(summary: dict) -> int:
    dropped = summary.get("dropped") or {}
    return sum(int(dropped.get(k, 0) or 0) for k in ("bus_gaps", "bus_malformed", "invalid_payload"))


def _display_latency(summary: dict, key: str) -> dict:
    entry = (summary.get("sample_to_display") or {}).get(key) or {}
    return {
        "p50": entry.get("p50_ms"),
        "p99": entry.get("p99_ms"),
        "max": entry.get("max_ms"),
        "n": entry.get("n"),
    }


class CpuSampler:
    """CPU use per node process (percent of one core), sampled with psutil over the run."""

    def __init__(self) -> None:
        self._procs: dict[str, object] = {}
        self.samples: dict[str, list[float]] = {}

    def sample(self, pids: dict[str, int]) -> None:
        import psutil

        for name, pid in pids.items():
            proc = self._procs.get(name)
            if proc is None or proc.pid != pid:
                try:
                    proc = self._procs[name] = psutil.Process(pid)
                    proc.cpu_percent(None)  # first call only primes the counter
                except psutil.Error:
                    continue
                continue
            try:
                self.samples.setdefault(name, []).append(proc.cpu_percent(None))
            except psutil.Error:
                self._procs.pop(name, None)

    def summary(self) -> dict[str, float]:
        return {name: round(sum(v) / len(v), 1) for name, v in self.samples.items() if v}


def run_demo_session(
    seconds: float, run_dir: Path, *, headless: bool = True, quiet: bool = False, config: str = DEMO_CONFIG
) -> dict:
    """Start the demo graph, stream for ``seconds``, stop everything, return the summary (also written to
    ``run_dir/summary.json``)."""
    from brainstream.models.config_base import resolve_config_path
    from brainstream.models.gallery import Gallery
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.collector import SessionCollector
    from brainstream.realtime.session.demo_assets import DEMO_DESIGN, demo_test_image_ids, ensure_demo_assets
    from brainstream.realtime.session.graph import SessionPlan, session_nodes
    from brainstream.realtime.session.supervisor import NodeSpec, Supervisor, brainstream_argv

    if headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    config_path = resolve_config_path(config, "pipelines")
    pipeline = load_pipeline_config(config_path)
    if not quiet:
        print("preparing the demo gallery and encoder ...", flush=True)
    assets = ensure_demo_assets(progress=not quiet)
    gallery_ids = list(Gallery.load(assets.gallery_dir).ids)
    n_gallery = len(gallery_ids)
    run_dir = Path(run_dir).resolve()
    shots = run_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    test_images = run_dir / "test_images.txt"  # what the virtual subject is shown: N-way among these
    test_images.write_text("\n".join(demo_test_image_ids(gallery_ids)) + "\n", encoding="utf-8")
    subject = NodeSpec("virtual-subject", brainstream_argv(
        "simulate", "--live", "--modality", "meg", "--subject", str(assets.subject_seed),
        "--gallery", str(assets.gallery_dir), "--name", pipeline.input.signal.name,
        "--n-train-images", "0", "--n-test-images", str(DEMO_DESIGN["n_test_images"]),
        "--test-repeats", "1000", "--design-seed", str(DEMO_DESIGN["design_seed"]), "--no-progress",
        "--chunk-ms", "5"),
        log_dir=run_dir / "logs")  # fmt: skip
    plan = SessionPlan(run_dir=run_dir, config_path=config_path, checkpoint=assets.checkpoint_dir,
                       gallery=assets.gallery_dir, screenshot=shots / "demo.png",
                       screenshot_after=max(1.0, seconds - 3.0), display_seconds=seconds + 2.0,
                       extra_nodes=[subject], test_images=test_images)  # fmt: skip
    collector = SessionCollector(pipeline.bus.sub, keys=pipeline.bus.keys_dir).start()
    supervisor = Supervisor(session_nodes(pipeline, plan))
    if not quiet:
        print(
            f"demo running for {seconds:g} s ({'offscreen' if headless else 'window'}); out: {run_dir}",
            flush=True,
        )
    cpu = CpuSampler()
    supervisor.start()
    t0 = time.monotonic()
    try:
        _wait_for_decoder(collector, STARTUP_TIMEOUT_S)
        _wait(seconds, collector, cpu, supervisor, quiet)
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    deadline = time.monotonic() + 10.0  # let the display take its screenshot and write its summary
    while time.monotonic() < deadline and not plan.display_summary.exists():
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    codes = supervisor.stop()
    collector.stop()
    display = _read_json(plan.display_summary)
    decoder = collector.last_status.get("decoder", {})
    summary = {
        "seconds": round(elapsed, 1),
        "windows": collector.windows,
        "dropped_samples": _dropped_samples(decoder),
        "dropped_windows": int(decoder.get("dropped_windows", 0)),
        "dropped_messages": collector.dropped_messages + _display_drops(display),
        "latency_ms": {"push_to_embedding": collector.push_to_embedding(),
                       "sample_to_display": _display_latency(display, "retrieval"),
                       "sample_to_image": _display_latency(display, "image"),
                       "stages": collector.stages()},
        "retrieval": collector.retrieval_summary(n_gallery),
        "retrieval_test_images": collector.test_retrieval_summary(),
        "reconstruction": {"two_way_identification": collector.identification_summary(),
                           "kept": str(plan.reconstructions)},
        "images": collector.images,
        "cpu_percent": cpu.summary(),
        "screenshots": [str(p) for p in sorted(shots.glob("*.png"))],
        "recording": str(plan.recording),
        "restarts": {n: s["restarts"] for n, s in supervisor.status().items()},
        "exit_codes": codes,
    }  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _wait_for_decoder(collector, timeout: float) -> None:
    """Return once the decoder publishes its status (its runtime is warm and it reads the stream), so that
    the demo's seconds are seconds of decoding on a slow or busy machine too; give up after ``timeout``."""
    deadline = time.monotonic() + timeout
    while "decoder" not in collector.last_status and time.monotonic() < deadline:
        time.sleep(0.1)


def _wait(seconds: float, collector, cpu: CpuSampler, supervisor, quiet: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=int(seconds), desc="demo", unit="s", disable=quiet) as bar:
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(0.5)
            cpu.sample(supervisor.pids())
            bar.n = int(elapsed)
            ranks = collector.ranks
            top5 = sum(r < 5 for r in ranks) / len(ranks) if ranks else 0.0
            bar.set_postfix(windows=collector.windows, top5=f"{top5:.0%}")
