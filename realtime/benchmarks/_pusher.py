"""A separate process that plays noise into an LSL outlet in real time (benchmarks' signal source).

Run as ``python -m brainstream.realtime.benchmarks._pusher NAME N_CHANNELS RATE CHUNK_MS SECONDS``.
Each chunk is
pushed when its last sample is due and stamped with that time, so ``t_sample`` is the push time.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pylsl

from brainstream.realtime.lsl_info import make_stream_info


def main(name: str, n_channels: int, rate: float, chunk_ms: float, seconds: float) -> None:
    info = make_stream_info(name, "MEG", [f"CH{i:03d}" for i in range(n_channels)], rate, source_id=name)
    outlet = pylsl.StreamOutlet(info)
    chunk = max(1, int(round(rate * chunk_ms / 1000)))
    data = (np.random.default_rng(0).standard_normal((chunk * 100, n_channels)) * 1e-12).astype(np.float32)
    while not outlet.have_consumers():
        time.sleep(0.01)
    time.sleep(0.5)
    t0 = pylsl.local_clock()
    n_chunks = int(seconds * rate / chunk)
    for k in range(n_chunks):
        due = t0 + ((k + 1) * chunk - 1) / rate
        while (wait := due - pylsl.local_clock()) > 0:
            time.sleep(min(wait, 0.002))
        i = (k % 100) * chunk
        outlet.push_chunk(data[i : i + chunk], due)
    time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
