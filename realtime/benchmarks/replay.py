"""``brainstream bench replay``: replay timing and recorder throughput, against baselines measured alike.

1. Replay: a FIF of ``--seconds`` of a ``--channels`` × ``--sfreq`` stream (272 × 1200 Hz by default,
   THINGS-MEG's shape) is played at speed 1 by our :class:`~realtime.replay.Player` while a plain pylsl
   inlet receives it. Rate error = drift against the nominal rate: the slope of a least-squares line of
   actual push time over scheduled push time, minus 1 (and at the receiver, of samples received over
   arrival time); worst lag = the latest a push came behind its schedule. Baseline: the
   mne-lsl ``PlayerLSL`` (when installed) playing the same file, measured by the same receiver. The
   receiver runs in a process of its own, as a real consumer (a decoding session) does: in the player's
   process its thread would compete with the push thread for the GIL. Also reported: the lag p99, how the
   push thread was scheduled (SCHED_FIFO when the OS allows it) and the share of a CPU core it used
   (``--spin-ms`` sets its spin window, ``--no-priority`` plays at normal priority).
2. Recorder: the same amount of data written through :class:`~realtime.recording.XdfWriter` (Samples
   every 0.25 s of data, flush + fsync + Boundary every 0.5 s of data) as fast as it goes: MB/s and the
   cost of each fsync. Baseline: the same bytes written with a plain buffered file and no fsync (what
   LabRecorder does).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HELP = "replay rate error and push lag (272 ch @ 1200 Hz), recorder MB/s and fsync cost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="seconds of signal to replay (default 60)"
    )
    parser.add_argument("--channels", type=int, default=272, help="channels (default 272)")
    parser.add_argument("--sfreq", type=float, default=1200.0, help="sample rate in Hz (default 1200)")
    parser.add_argument("--chunk-ms", type=float, default=10.0, help="replay push interval (default 10 ms)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the mne-lsl player baseline")
    parser.add_argument(
        "--spin-ms", type=float, default=0.5, help="player's spin window before each push (default 0.5 ms)"
    )
    parser.add_argument(
        "--no-priority", action="store_true", help="play at normal priority even when the OS allows more"
    )


class _Receiver(threading.Thread):
    """Pull a stream as it arrives; keep arrival times and sample timestamps per chunk."""

    def __init__(self, name: str, n_ch: int, timeout: float = 20.0) -> None:
        import pylsl

        super().__init__(daemon=True)
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout)
        if not found:
            raise RuntimeError(f"benchmark stream {name!r} did not appear")
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False, processing_flags=0)
        self.inlet.open_stream(timeout=timeout)
        dtype = {pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64}[found[0].channel_format()]
        self.buf = np.empty((4096, n_ch), dtype=dtype)
        self.stop_event = threading.Event()
        self.arrivals: list[tuple[float, int, float, float]] = []  # (t_arrival, n, first ts, last ts)

    def run(self) -> None:
        import pylsl
        from pylsl.util import LostError

        while not self.stop_event.is_set():
            try:
                _, ts = self.inlet.pull_chunk(timeout=0.1, max_samples=4096, dest_obj=self.buf, min_samples=1)
            except LostError:  # the player removed its outlet at the end of the file
                return
            if len(ts):
                self.arrivals.append((pylsl.local_clock(), len(ts), ts[0], ts[-1]))

    def finish(self) -> dict:
        self.stop_event.set()
        self.join()
        self.inlet.close_stream()
        del self.inlet
        a = np.asarray(self.arrivals)
        if len(a) < 3:
            return {"samples": int(a[:, 1].sum()) if len(a) else 0}
        n = a[:, 1]
        # skip the first second (connection, first chunks) so start-up does not count as rate error
        keep = a[:, 0] >= a[0, 0] + 1.0
        a, n = a[keep], n[keep]
        # arrival rate: slope of cumulative samples over arrival time (a fit, not two end points)
        arrival_rate = np.polyfit(a[:, 0] - a[0, 0], np.cumsum(n), 1)[0]
        ts_rate = (n.sum() - 1) / (a[-1, 3] - a[0, 2])
        return {
            "samples": int(np.asarray(self.arrivals)[:, 1].sum()),
            "arrival_rate": float(arrival_rate),
            "timestamp_rate": float(ts_rate),
            "worst_arrival_lag_ms": float(np.max(a[:, 0] - a[:, 3]) * 1e3),
        }


def _receiver_main() -> None:
    """Child process (``python -c``): connect to the stream named in argv, print "ready", receive until a
    line arrives on stdin, print the summary as JSON."""
    import json
    import sys

    name, n_ch = sys.argv[1], int(sys.argv[2])
    try:
        rx = _Receiver(name, n_ch)
    except Exception as exc:  # the parent reports it
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    rx.start()
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(rx.finish()), flush=True)


class _ReceiverProcess:
    """A :class:`_Receiver` in a process of its own, so that it does not share the player's GIL."""

    def __init__(self, name: str, n_ch: int) -> None:
        import subprocess
        import sys

        code = "from brainstream.realtime.benchmarks.replay import _receiver_main; _receiver_main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, name, str(n_ch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline().strip()  # "" if it died
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(
                f"the benchmark's receiver process did not connect to {name!r}: {line or 'died'}"
            )

    def finish(self) -> dict:
        import json

        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.wait(30)
        got = json.loads(line) if line.strip() else {"error": "the receiver process died"}
        if "error" in got:
            raise RuntimeError(f"benchmark receiver: {got['error']}")
        return got


def _make_fif(path: Path, seconds: float, n_ch: int, sfreq: float) -> None:
    import mne

    n = int(round(seconds * sfreq))
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((n_ch, n), dtype=np.float32) * 1e-12).astype(np.float64)
    data[-1] = np.arange(n)
    info = mne.create_info(
        [f"MEG{i:03d}" for i in range(n_ch - 1)] + ["COUNTER"], sfreq, ["mag"] * (n_ch - 1) + ["misc"]
    )
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.save(path, overwrite=True, verbose=False)


def _ours(path: Path, args: argparse.Namespace) -> dict:
    import uuid

    from brainstream.realtime.replay import Player

    name = f"bench-replay-{uuid.uuid4().hex[:6]}"
    player = Player(
        path, name=name, chunk_ms=args.chunk_ms, markers=False, spin_ms=args.spin_ms,
        priority=not args.no_priority,
    ).open()  # fmt: skip
    rx = _ReceiverProcess(name, args.channels)  # returns once connected
    stats = player.run()
    time.sleep(0.3)
    got = rx.finish()
    player.close()
    return {
        "push_rate_error_pct": abs(stats.rate_error()) * 100,
        "endpoint_rate_error_pct": abs(stats.effective_rate(name) / args.sfreq - 1) * 100,
        "rx_rate_error_pct": abs(got.get("arrival_rate", np.nan) / args.sfreq - 1) * 100,
        "timestamp_rate_error_pct": abs(got.get("timestamp_rate", np.nan) / args.sfreq - 1) * 100,
        "worst_lag_ms": stats.worst_lag_ms,
        "mean_lag_ms": stats.mean_lag_ms,
        "p99_lag_ms": stats.lag_percentile(99),
        "worst_arrival_lag_ms": got.get("worst_arrival_lag_ms", np.nan),
        "samples_pushed": stats.samples[name],
        "samples_received": got["samples"],
        "scheduling": stats.scheduling,
        "spin_ms": args.spin_ms,
        "player_cpu_pct": stats.cpu_share * 100,
    }


def _mne_lsl(path: Path, args: argparse.Namespace) -> dict | None:
    try:
        from mne_lsl.player import PlayerLSL
    except ImportError:
        return None
    import uuid
    import warnings

    # mne-lsl warns about its own last chunk; not ours to report
    warnings.filterwarnings("ignore", message=".*End of file reached with an empty chunk.*")
    name = f"bench-mnelsl-{uuid.uuid4().hex[:6]}"
    chunk = max(1, int(round(args.sfreq * args.chunk_ms / 1000)))
    player = PlayerLSL(path, chunk_size=chunk, n_repeat=1, name=name, annotations=False)
    player.start()
    rx = _ReceiverProcess(name, args.channels)
    time.sleep(args.seconds + 0.5)
    got = rx.finish()
    if player.running:  # with n_repeat=1 it stops itself at the end of the file
        player.stop()
    return {
        "rx_rate_error_pct": abs(got.get("arrival_rate", np.nan) / args.sfreq - 1) * 100,
        "timestamp_rate_error_pct": abs(got.get("timestamp_rate", np.nan) / args.sfreq - 1) * 100,
        "worst_arrival_lag_ms": got.get("worst_arrival_lag_ms", np.nan),
        "samples_received": got["samples"],
    }


def _recorder(tmp: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    from brainstream.realtime.recording import StreamHeader, XdfWriter

    n_ch, sfreq = args.channels, args.sfreq
    per_chunk = int(round(0.25 * sfreq))
    n_chunks = max(2, int(args.seconds / 0.25))
    block = np.random.default_rng(0).standard_normal((n_ch, per_chunk)).astype(np.float32)
    ts = np.arange(per_chunk) / sfreq
    hdr = StreamHeader.local("bench", "MEG", [f"MEG{i:03d}" for i in range(n_ch)], sfreq)
    # flushes are driven here (every 2 chunks = 0.5 s of data); the background flusher stays idle
    w = XdfWriter(tmp / "bench.xdf", autoflush=False).open()
    sid = w.add_stream(hdr)
    t0 = time.perf_counter()
    for k in range(n_chunks):
        w.write_samples(sid, block, ts + k * 0.25)
        if k % 2 == 1:
            w.flush()
    w.close()
    elapsed = time.perf_counter() - t0
    ours = {
        "mb_s": w.bytes_written / elapsed / 1e6,
        "fsync_ms_p50": w.stats["fsync_ms_p50"],
        "fsync_ms_p99": w.stats["fsync_ms_p99"],
        "fsyncs": len(w.fsync_seconds),
        "bytes": w.bytes_written,
    }
    # baseline: the same chunk bytes, buffered writes, no fsync
    from brainstream.models import xdf as xdf_format

    payload = xdf_format.numeric_samples_chunk(1, block, ts, "float32")
    t0 = time.perf_counter()
    with open(tmp / "plain.xdf", "wb") as f:
        for _ in range(n_chunks):
            f.write(payload)
    elapsed = time.perf_counter() - t0
    base = {"mb_s": len(payload) * n_chunks / elapsed / 1e6}
    return ours, base


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as d:
        tmp = Path(d)
        path = tmp / "bench_raw.fif"
        print(
            f"writing {args.seconds:g} s of {args.channels} ch @ {args.sfreq:g} Hz to a FIF ...", flush=True
        )
        _make_fif(path, args.seconds, args.channels, args.sfreq)
        print("replaying with brainstream's Player ...", flush=True)
        ours = _ours(path, args)
        base = None
        if not args.no_baseline:
            print("replaying with mne-lsl's PlayerLSL (baseline) ...", flush=True)
            base = _mne_lsl(path, args)
        print("recorder throughput ...", flush=True)
        rec, rec_base = _recorder(tmp, args)

    rows = [
        ("replay rate error (push-time fit)", f"{ours['push_rate_error_pct']:.5f} %", "-"),
        ("  (first-to-last push)", f"{ours['endpoint_rate_error_pct']:.5f} %", "-"),
        ("rate error (arrival fit)", f"{ours['rx_rate_error_pct']:.5f} %",
         f"{base['rx_rate_error_pct']:.5f} %" if base else "n/a"),
        ("timestamp rate error", f"{ours['timestamp_rate_error_pct']:.6f} %",
         f"{base['timestamp_rate_error_pct']:.6f} %" if base else "n/a"),
        ("worst push lag", f"{ours['worst_lag_ms']:.2f} ms", "-"),
        ("p99 / mean push lag", f"{ours['p99_lag_ms']:.2f} / {ours['mean_lag_ms']:.2f} ms", "-"),
        ("push thread: scheduling, spin, CPU",
         f"{ours['scheduling']}, {ours['spin_ms']:g} ms, {ours['player_cpu_pct']:.1f} %", "-"),
        ("worst arrival lag", f"{ours['worst_arrival_lag_ms']:.2f} ms",
         f"{base['worst_arrival_lag_ms']:.2f} ms" if base else "n/a"),
        ("samples received / pushed", f"{ours['samples_received']} / {ours['samples_pushed']}",
         str(base["samples_received"]) if base else "n/a"),
        ("recorder MB/s (fsync each 0.5 s)", f"{rec['mb_s']:.1f}", f"{rec_base['mb_s']:.1f} (no fsync)"),
        ("fsync p50 / p99", f"{rec['fsync_ms_p50']:.2f} / {rec['fsync_ms_p99']:.2f} ms", "-"),
    ]  # fmt: skip
    print(f"\n{'metric':36s} {'brainstream':>24s} {'baseline':>24s}")
    for label, a, b in rows:
        print(f"{label:36s} {a:>24s} {b:>24s}")
    print("(goals: rate error < 0.01 %, worst lag < 5 ms; the machine may be shared, timings are noisy)")
    return {
        "rate_error_pct": ours["push_rate_error_pct"],
        "worst_lag_ms": ours["worst_lag_ms"],
        "p99_lag_ms": ours["p99_lag_ms"],
        "player_cpu_pct": ours["player_cpu_pct"],
        "scheduling": ours["scheduling"],
        "recorder_mb_s": rec["mb_s"],
        "fsync_ms_p99": rec["fsync_ms_p99"],
        "baseline": {
            "mne_lsl_player": base,
            "recorder_plain_write_mb_s": rec_base["mb_s"],
            "replay_details": ours,
            "recorder_details": rec,
        },
    }
