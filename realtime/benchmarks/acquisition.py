"""``brainstream bench acquisition``: LSL push -> sample readable in the StreamReader's ring buffer.

A separate process plays the device: an outlet with the CTF-275 profile's 272 channels plus a counter
channel, pushing 10 ms chunks at 1200 Hz and noting ``pylsl.local_clock()`` just before each push. In this
process a :class:`~realtime.acquisition.StreamReader` (default clock sync + dejitter) fills its ring buffer;
a chunk is readable when ``RingBuffer.write`` has published its last sample (noted right after the write,
in the reader thread). Also printed: when a consumer sleeping on ``RingBuffer.wait`` wakes with it. Both
clocks are LSL's, shared by all processes on the machine. ``dropped`` = pushed samples that never reached the
buffer (the counter channel is checked too).

The first second is a warm-up, left out of the latency percentiles (still counted in ``samples`` and
``dropped``): liblsl delivers the first ~0.6 s after a connection in one burst while its data feed starts.

Baseline, measured in the same run (printed, not in the JSON): a bare pylsl inlet pulling the same stream,
noting arrival in the pulling thread itself, with no ring buffer and no checks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
import uuid

import numpy as np

HELP = "LSL push -> readable in the ring buffer latency (CTF-275 profile, 1200 Hz, 10 ms chunks, counter)"

COUNTER = "COUNTER"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of streaming (default 30)")
    parser.add_argument(
        "--device", default="ctf275_things_meg", help="device profile (default ctf275_things_meg)"
    )
    parser.add_argument("--chunk-ms", type=float, default=10.0, help="outlet chunk length in ms (default 10)")
    parser.add_argument(
        "--baseline-duration",
        type=float,
        default=10.0,
        help="seconds for the bare-pylsl baseline (0 to skip; default 10)",
    )


def _device_process(name, ch_names, sfreq, chunk, n_chunks, push_times, ready, go, done) -> None:
    """Child process: one outlet pushing ``n_chunks`` paced chunks with a running counter in the last row."""
    import pylsl

    from brainstream.realtime.lsl_info import make_stream_info

    info = make_stream_info(
        name, "MEG", ch_names, sfreq, ch_types=["MEG"] * (len(ch_names) - 1) + ["MISC"], source_id=name
    )
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk)
    rng = np.random.default_rng(0)
    block = (rng.standard_normal((chunk, len(ch_names))) * 1e-12).astype(np.float32)
    ready.set()
    go.wait()
    outlet.wait_for_consumers(10.0)
    period = chunk / sfreq
    t_next = time.perf_counter()
    for k in range(n_chunks):
        block[:, -1] = np.arange(k * chunk, (k + 1) * chunk)
        push_times[k] = pylsl.local_clock()
        outlet.push_chunk(block)
        t_next += period
        time.sleep(max(0.0, t_next - time.perf_counter()))
    done.wait(30.0)  # keep the outlet until the reader has closed its inlet
    del outlet


class _Device:
    def __init__(self, name: str, ch_names: list[str], sfreq: float, chunk: int, n_chunks: int) -> None:
        ctx = mp.get_context("spawn")
        self.push_times = ctx.RawArray("d", n_chunks)
        self.ready, self.go, self.done = ctx.Event(), ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_device_process,
            args=(name, ch_names, sfreq, chunk, n_chunks, self.push_times, self.ready, self.go, self.done),
            daemon=True,
        )
        self.proc.start()
        if not self.ready.wait(60.0):
            raise RuntimeError("the benchmark's device process did not start within 60 s")

    def finish(self) -> np.ndarray:
        self.done.set()
        self.proc.join(timeout=30.0)
        return np.frombuffer(self.push_times, dtype=np.float64).copy()


def _percentiles(lat_ms: np.ndarray) -> dict:
    if lat_ms.size == 0:
        return {
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
            "mean_ms": float("nan"),
        }
    return {
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "max_ms": float(lat_ms.max()),
        "mean_ms": float(lat_ms.mean()),
    }


def _run_reader(profile, chunk: int, n_chunks: int, n_warm: int) -> dict:
    import pylsl

    from brainstream.realtime.acquisition import StreamReader

    name = f"bench-acq-{uuid.uuid4().hex[:8]}"
    ch_names = list(profile.channels) + [COUNTER]
    device = _Device(name, ch_names, profile.sfreq, chunk, n_chunks)
    n_total = chunk * n_chunks
    arrival = np.full(n_chunks, np.nan)  # readable: write() has published the chunk's last sample
    woken = np.full(n_chunks, np.nan)  # a consumer sleeping on RingBuffer.wait has woken up with it
    reader = StreamReader(
        name=name, profile=profile, counter_channel=COUNTER, buffer_seconds=n_total / profile.sfreq + 5
    )
    try:
        reader.connect()
        buf = reader.buffer
        write = buf.write

        def timed_write(data, timestamps) -> None:
            write(data, timestamps)
            now = pylsl.local_clock()
            done = (buf.n_written - timestamps.shape[0]) // chunk
            arrival[done : min(n_chunks, buf.n_written // chunk)] = now

        buf.write = timed_write  # instance attribute: only this benchmark's buffer is instrumented
        reader.start()
        stop = threading.Event()

        def consumer() -> None:
            done_chunks = 0
            while not stop.is_set() and done_chunks < n_chunks:
                if not buf.wait(done_chunks * chunk + chunk - 1, timeout=0.2):
                    continue
                now = pylsl.local_clock()
                complete = min(n_chunks, buf.n_written // chunk)
                woken[done_chunks:complete] = now
                done_chunks = complete

        thread = threading.Thread(target=consumer, name="bench-consumer", daemon=True)
        thread.start()
        device.go.set()
        thread.join(timeout=n_chunks * chunk / profile.sfreq + 30.0)
        stop.set()
        time.sleep(0.2)
        stats = reader.stats
        n_got = buf.n_written
        counter = buf.read_last(min(n_got, buf.capacity))[0][reader.counter_index] if n_got else np.empty(0)
    finally:
        reader.stop()
        push_times = device.finish()
    in_order = bool(np.array_equal(counter, np.arange(n_total - counter.size, n_total)))
    lat = (arrival - push_times)[n_warm:]
    lat = lat[np.isfinite(lat)] * 1e3
    wake = (woken - push_times)[n_warm:]
    wake = wake[np.isfinite(wake)] * 1e3
    return {
        **_percentiles(lat),
        "consumer": _percentiles(wake),
        "samples": int(n_got),
        "dropped": int(n_total - n_got) + (0 if in_order else int(stats.missing_samples)),
        "counter_in_order": in_order,
        "gaps": stats.gaps,
        "effective_rate": stats.effective_rate,
    }


def _run_bare_pylsl(profile, chunk: int, n_chunks: int, n_warm: int) -> dict:
    """Baseline: a bare pylsl inlet pull loop, arrival noted by the pulling thread."""
    import pylsl

    from brainstream.realtime.acquisition.resolve import resolve_stream

    name = f"bench-acq-bare-{uuid.uuid4().hex[:8]}"
    ch_names = list(profile.channels) + [COUNTER]
    device = _Device(name, ch_names, profile.sfreq, chunk, n_chunks)
    arrival = np.full(n_chunks, np.nan)
    received = 0
    try:
        inlet = pylsl.StreamInlet(
            resolve_stream(name=name, timeout=10.0),
            max_buflen=30,
            recover=False,
            processing_flags=pylsl.proc_clocksync | pylsl.proc_dejitter,
        )
        inlet.open_stream(timeout=10.0)
        dest = np.empty((256, len(ch_names)), dtype=np.float32)
        device.go.set()
        end = time.perf_counter() + n_chunks * chunk / profile.sfreq + 10.0
        while received < chunk * n_chunks and time.perf_counter() < end:
            _, ts = inlet.pull_chunk(
                timeout=0.05, max_samples=256, dest_obj=dest, min_samples=1, as_numpy=True
            )
            if ts.size:
                now = pylsl.local_clock()
                before = received // chunk
                received += ts.size
                arrival[before : min(n_chunks, received // chunk)] = now
        inlet.close_stream()
        del inlet
    finally:
        push_times = device.finish()
    lat = (arrival - push_times)[n_warm:]
    lat = lat[np.isfinite(lat)] * 1e3
    return {**_percentiles(lat), "samples": received, "dropped": chunk * n_chunks - received}


def run(args: argparse.Namespace) -> dict:
    from brainstream.models.device_profile import load_device_profile

    profile = load_device_profile(args.device)
    chunk = max(1, round(profile.sfreq * args.chunk_ms / 1000.0))
    n_chunks = max(1, round(args.duration * profile.sfreq / chunk))
    n_warm = round(profile.sfreq / chunk)  # 1 s
    print(
        f"{profile.name}: {profile.n_channels} ch + counter at {profile.sfreq:g} Hz, {chunk}-sample chunks, "
        f"1 s warm-up + {n_chunks * chunk / profile.sfreq:g} s measured (device in a separate process)"
    )
    ours = _run_reader(profile, chunk, n_warm + n_chunks, n_warm)
    rows = [
        ("ours: readable in RingBuffer", ours),
        ("ours: consumer woken (RingBuffer.wait)", {**ours, **ours["consumer"]}),
    ]
    if args.baseline_duration > 0:
        n_base = max(1, round(args.baseline_duration * profile.sfreq / chunk))
        rows.append(("bare pylsl inlet (baseline)", _run_bare_pylsl(profile, chunk, n_warm + n_base, n_warm)))
    print(f"{'path':<40} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'samples':>9} {'dropped':>8}")
    for label, r in rows:
        print(
            f"{label:<40} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.2f} "
            f"{r['samples']:>9} {r['dropped']:>8}"
        )
    print(
        f"ours: counter in order: {ours['counter_in_order']}, gaps: {ours['gaps']}, "
        f"effective rate {ours['effective_rate']:.1f} Hz"
    )
    return {k: ours[k] for k in ("p50_ms", "p99_ms", "samples", "dropped")}
