"""``brainstream bench simulation``: speed of the offline virtual subject, and how decodable it is.

Speed: simulate an RSVP session (default 600 train + 50 test × 4 MEG trials, 272 channels at 1200 Hz,
~20 min of data) to a FIF file; report wall and CPU seconds and the real-time factor. Baseline, in the same
run: the floor set by writing the same kind of file, i.e. white noise of the same shape (60 s of it, scaled
to the session's length) through ``mne.io.RawArray.save``.

Decodability (``--decoding``, a few minutes): ridge regression from single-trial epochs (0-0.8 s, 0.5-40 Hz,
~120 Hz) to the image embedding, retrieval among 200 test images by cosine (regularisation chosen on held-out
training images), beside chance, and a nonlinear probe (ridge on epochs + 14-30 Hz log power) that shows
how much a nonlinear decoder can gain.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

HELP = "virtual subject: offline simulation speed vs writing plain noise; --decoding: ridge top-5 vs chance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=("meg", "eeg"), default="meg", help="default meg")
    parser.add_argument("--n-train-images", type=int, default=600, help="(600)")
    parser.add_argument("--n-test-images", type=int, default=50, help="(50)")
    parser.add_argument("--test-repeats", type=int, default=4, help="(4)")
    parser.add_argument("--snr", type=float, default=None, help="default: the subject's default SNR")
    parser.add_argument("--decoding", action="store_true", help="also measure ridge retrieval (minutes)")
    parser.add_argument(
        "--cnn", action="store_true", help="with --decoding: also train a small CNN (minutes)"
    )


def _baseline_write(info, seconds: float, out: Path) -> float:
    import mne

    n = int(seconds * info["sfreq"])
    data = np.random.default_rng(0).standard_normal((len(info.ch_names), n)) * 1e-13
    t = time.perf_counter()
    mne.io.RawArray(data, info, verbose=False).save(out, overwrite=True, fmt="single", verbose=False)
    return time.perf_counter() - t


def run(args: argparse.Namespace) -> dict:
    from brainstream.realtime.simulation.offline import RSVPDesign, simulate_recording
    from brainstream.realtime.simulation.subject import DEFAULT_SNR

    profile = {"meg": "ctf275_things_meg", "eeg": "eeg64_1000hz"}[args.modality]
    design = RSVPDesign(args.n_train_images, args.n_test_images, args.test_repeats)
    snr = DEFAULT_SNR if args.snr is None else args.snr
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench_raw.fif"
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = simulate_recording(out, profile=profile, seed=1, snr=snr, design=design, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        size_mb = out.stat().st_size / 1e6
        import mne

        info = mne.io.read_info(out, verbose=False)
        base = _baseline_write(info, 60.0, Path(tmp) / "noise_raw.fif") * result.duration_s / 60.0
    res = {
        "modality": args.modality,
        "n_trials": result.n_trials,
        "data_seconds": round(result.duration_s, 1),
        "n_channels": result.n_channels,
        "sfreq": result.sfreq,
        "file_mb": round(size_mb, 1),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "realtime_factor": round(result.duration_s / wall, 1),
        "baseline_write_noise_wall_s": round(base, 2),
        "snr": snr,
    }
    print(f"{'':28s}{'wall s':>10s}{'x real time':>14s}")
    print(f"{'virtual subject -> FIF':28s}{wall:10.1f}{result.duration_s / wall:14.1f}   (cpu {cpu:.1f} s)")
    print(f"{'baseline: noise -> FIF':28s}{base:10.1f}{result.duration_s / base:14.1f}   (scaled from 60 s)")
    if args.decoding:
        from brainstream.realtime.simulation.decodability import measure

        dec = measure(profile=profile, snr=snr, seed=0, cnn=args.cnn)
        res["ridge"] = dec["ridge"]
        res["nonlinear_probe"] = dec["ridge_linear_plus_power"]
        r, p = dec["ridge"], dec["ridge_linear_plus_power"]
        print(
            f"200-way single-trial top-5: chance {r['chance_top5']:.3f}  ridge {r['top5']:.3f}  "
            f"ridge+power probe {p['top5']:.3f}  (ridge top-1 {r['top1']:.3f})"
        )
        if "cnn" in dec:
            res["cnn"] = dec["cnn"]
            print(f"small CNN top-5 {dec['cnn']['top5']:.3f} (top-1 {dec['cnn']['top1']:.3f})")
    return res
