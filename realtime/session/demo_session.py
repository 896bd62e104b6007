"""Run the embedded demo graph for a while and summarise it (``brainstream demo``, ``bench latency``)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_CONFIG = "demo_meg"
CONTINUOUS_CONFIG = "demo_meg_continuous"  # sliding causal windows every 100 ms, decoded incrementally
DISPLAY_GRACE_S = 10.0  # the display's own --seconds: the session's, its startup and this, a backstop
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


def _free_tcp_ports(n: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def isolated_config(run_dir: Path, config: str = DEMO_CONFIG) -> Path:
    """A copy of a pipeline config (written to ``run_dir/pipeline.yaml``) with bus ports of its own and
    stream names carrying a unique tag, so that this session cannot meet another graph on the same machine
    (a benchmark beside a demo, tests run by several people at once)."""
    import secrets

    import yaml

    from brainstream.models.config_base import load_yaml, resolve_config_path

    data = load_yaml(resolve_config_path(config, "pipelines"))
    pub, sub = _free_tcp_ports(2)
    data["bus"] = {
        **(data.get("bus") or {}),
        "pub": f"tcp://127.0.0.1:{pub}",
        "sub": f"tcp://127.0.0.1:{sub}",
    }
    signal = data["input"]["signal"]
    signal["name"] = f"{signal['name']}-{os.getpid()}-{secrets.token_hex(3)}"
    if data["input"].get("markers"):
        data["input"]["markers"]["name"] = f"{signal['name']}-markers"  # the virtual subject's naming
    path = Path(run_dir) / "pipeline.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def bus_addresses_in_use(pipeline) -> list[str]:
    """The pipeline's TCP bus addresses on which something already listens (another session's broker).

    Probed as ZeroMQ binds them (``SO_REUSEADDR``: a port a stopped session left in TIME_WAIT is free)."""
    import socket

    taken = []
    for address in (pipeline.bus.pub, pipeline.bus.sub):
        scheme, _, rest = address.partition("://")
        host, _, port = rest.rpartition(":")
        if scheme != "tcp" or not port.isdigit():
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0" if host in ("*", "") else host, int(port)))
        except OSError:
            taken.append(address)
        finally:
            sock.close()
    return taken


def demo_config_path(run_dir: Path, config: str, isolated: bool, quiet: bool = True) -> Path:
    """The pipeline config a demo session runs: the named one, or an isolated copy of it
    (:func:`isolated_config`) when asked or when another session already holds its bus ports, so that a
    second demo on one machine runs beside the first instead of failing on its ports and stream names."""
    from brainstream.models.config_base import resolve_config_path
    from brainstream.realtime.pipeline_config import load_pipeline_config

    path = resolve_config_path(config, "pipelines")
    if not isolated:
        taken = bus_addresses_in_use(load_pipeline_config(path))
        if not taken:
            return path
        if not quiet:
            print(
                f"the demo's bus addresses {', '.join(taken)} are in use (another session on this machine?): "
                "this demo runs on bus ports and stream names of its own",
                flush=True,
            )
    return isolated_config(Path(run_dir), config)


def virtual_subject_node(pipeline, assets, log_dir: Path, chunk_ms: float = 5.0):
    """The demo's signal source: the virtual subject streaming the demo's test images over LSL, named as
    the pipeline's signal (markers ``<name>-markers``, source id ``<name>``)."""
    from brainstream.realtime.session.demo_assets import DEMO_DESIGN
    from brainstream.realtime.session.supervisor import NodeSpec, brainstream_argv

    name = pipeline.input.signal.name
    return NodeSpec("virtual-subject", brainstream_argv(
        "simulate", "--live", "--modality", "meg", "--subject", str(assets.subject_seed),
        "--gallery", str(assets.gallery_dir), "--name", name, "--source-id", name,
        "--n-train-images", "0", "--n-test-images", str(DEMO_DESIGN["n_test_images"]),
        "--test-repeats", "1000", "--design-seed", str(DEMO_DESIGN["design_seed"]), "--no-progress",
        "--chunk-ms", f"{chunk_ms:g}"),
        log_dir=log_dir)  # fmt: skip


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
    seconds: float,
    run_dir: Path,
    *,
    headless: bool = True,
    quiet: bool = False,
    config: str = DEMO_CONFIG,
    monitor: Callable[[float, object, object], None] | None = None,
    isolated: bool = False,
) -> dict:
    """Start the demo graph, stream for ``seconds``, stop everything, return the summary (also written to
    ``run_dir/summary.json``).

    ``monitor(elapsed_s, collector, supervisor)``, when given, is called about twice a second while the
    session runs (the soak benchmark samples memory and latency blocks with it). ``isolated`` runs the
    graph on bus ports and stream names of its own (:func:`isolated_config`).
    """
    from brainstream.models.gallery import Gallery
    from brainstream.realtime.pipeline_config import load_pipeline_config
    from brainstream.realtime.session.collector import SessionCollector
    from brainstream.realtime.session.demo_assets import (
        DEMO_ENCODERS,
        demo_test_image_ids,
        ensure_demo_assets,
    )
    from brainstream.realtime.session.graph import SessionEvents, SessionPlan, session_nodes
    from brainstream.realtime.session.supervisor import Supervisor, interrupt_on_signals

    if headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    config_path = demo_config_path(Path(run_dir), config, isolated, quiet)
    pipeline = load_pipeline_config(config_path)
    if not quiet:
        print("preparing the demo gallery and encoder ...", flush=True)
    encoder = pipeline.encoder.checkpoint if pipeline.encoder.checkpoint in DEMO_ENCODERS else "demo"
    assets = ensure_demo_assets(progress=not quiet, encoder=encoder)
    gallery_ids = list(Gallery.load(assets.gallery_dir).ids)
    n_gallery = len(gallery_ids)
    run_dir = Path(run_dir).resolve()
    shots = run_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    test_images = run_dir / "test_images.txt"  # what the virtual subject is shown: N-way among these
    test_images.write_text("\n".join(demo_test_image_ids(gallery_ids)) + "\n", encoding="utf-8")
    subject = virtual_subject_node(pipeline, assets, run_dir / "logs")
    plan = SessionPlan(run_dir=run_dir, config_path=config_path, checkpoint=assets.checkpoint_dir,
                       gallery=assets.gallery_dir, screenshot=shots / "demo.png",
                       screenshot_after=max(1.0, seconds - 3.0),
                       display_seconds=seconds + STARTUP_TIMEOUT_S + DISPLAY_GRACE_S,
                       extra_nodes=[subject], test_images=test_images)  # fmt: skip
    collector = SessionCollector(pipeline.bus.sub, keys=pipeline.bus.keys_dir).start()
    events = SessionEvents(pipeline)
    supervisor = Supervisor(session_nodes(pipeline, plan), on_event=events)
    if not quiet:
        print(
            f"demo running for {seconds:g} s ({'offscreen' if headless else 'window'}); out: {run_dir}",
            flush=True,
        )
    cpu = CpuSampler()
    with interrupt_on_signals():  # SIGTERM (or a SIGINT that a script's `&` had ignored) stops the demo
        supervisor.start()
        t0 = time.monotonic()
        interrupted = False
        try:
            _wait_for_decoder(collector, STARTUP_TIMEOUT_S)
            _wait(seconds, collector, cpu, supervisor, quiet, monitor)
        except KeyboardInterrupt:
            interrupted = True
            print("stopping ...", flush=True)
        collector.end()  # the summary counts what the session produced until now
        if not interrupted and "display" in supervisor.status():
            supervisor.end_node("display")  # it writes its summary; its own timer is only a backstop
        elapsed = time.monotonic() - t0
        try:
            # a full run: the display was asked to end above and writes its summary (its screenshot was
            # due 3 s before the session's seconds); interrupted: stop now (it writes it when stopped)
            deadline = time.monotonic() + (0.0 if interrupted else 10.0)
            while time.monotonic() < deadline and not plan.display_summary.exists():
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            codes = supervisor.stop()
            collector.stop()
            events.close()
    display = _read_json(plan.display_summary)
    decoder = collector.last_status.get("decoder", {})
    summary = {
        "seconds": round(elapsed, 1),
        "windows": collector.windows,
        "dropped_samples": _dropped_samples(decoder),
        "dropped_windows": int(decoder.get("dropped_windows", 0)),
        "incremental": bool(decoder.get("incremental", False)),  # sliding windows computed stride by stride
        "dropped_messages": collector.dropped_messages + _display_drops(display),
        "latency_ms": {"push_to_embedding": collector.push_to_embedding(),
                       "sample_to_display": _display_latency(display, "retrieval"),
                       "sample_to_image": _display_latency(display, "image"),
                       "stages": collector.stages(), "hops": collector.hops()},
        "retrieval": collector.retrieval_summary(n_gallery),
        "retrieval_test_images": collector.test_retrieval_summary(),
        "reconstruction": {"two_way_identification": collector.identification_summary(),
                           "kept": str(plan.reconstructions)},
        "retrievals": collector.retrievals,
        "images": collector.images,
        "cpu_percent": cpu.summary(),
        "screenshots": [str(p) for p in sorted(shots.glob("*.png"))],
        "recording": str(plan.recording),
        "restarts": {n: s["restarts"] for n, s in supervisor.status().items()},
        "decoder_runs": collector.runs(),
        "events": [f"{node}: {what}" for _, node, what in supervisor.events
                   if any(w in what for w in ("restarting", "promoted", "not restarted"))],
        "stop_seconds": round(supervisor.stop_seconds or 0.0, 2),
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


def _wait(seconds: float, collector, cpu: CpuSampler, supervisor, quiet: bool, monitor=None) -> None:
    import numpy as np
    from tqdm import tqdm

    with tqdm(total=int(seconds), desc="demo", unit="s", disable=quiet) as bar:
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(0.5)
            cpu.sample(supervisor.pids())
            if monitor is not None:
                monitor(elapsed, collector, supervisor)
            bar.n = int(elapsed)
            ranks = np.array(collector.ranks[:])  # a copy: the collector's thread keeps appending
            top5 = np.count_nonzero(ranks < 5) / len(ranks) if len(ranks) else 0.0
            bar.set_postfix(windows=collector.windows, top5=f"{top5:.0%}")
        if monitor is not None:
            monitor(elapsed, collector, supervisor)  # the end closes the last block
