"""A small, honest traffic source for the display: real bus messages shaped like a live session's.

It publishes, through a real :class:`~realtime.bus.Publisher`, a decimated ``signal.<stream>`` preview (with
an evoked deflection after each onset), ``marker`` onsets ``test/<image_id>``, and for each onset an
``embedding.<subject>``, a ``retrieval`` (top-k ids, scores, thumbnail paths, true id and its rank) and an
``image``, each with a real trace; plus ``status.<node>`` reports. Decoder quality is simulated (the true
image is ranked first with probability ``p_top1``); nothing here is a measurement.

Manual run (starts its own broker with ``--broker``)::

    python -m brainstream.realtime.display.traffic --broker --seconds 60 &
    brainstream display
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path

import numpy as np
import pylsl

SUBJECT = "sub-01"
STREAM = "sim-eeg"


def make_thumbnails(folder: str | Path, n: int, size: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``n`` procedural thumbnails as ``folder/images/<id>.png`` (gallery layout); returns id -> RGB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out_dir = Path(folder) / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    images = {}
    for i in range(n):
        hue = rng.uniform(0, 1, 2)
        bg = _hsv(hue[0], 0.35, 0.35) * (1 - 0.6 * (yy[..., None] + 0.5)) + 0.1
        fg = _hsv(hue[1], 0.8, 0.95)
        cx, cy, r = rng.uniform(-0.15, 0.15, 2).tolist() + [rng.uniform(0.18, 0.32)]
        k = int(rng.integers(3, 8))
        theta = np.arctan2(yy - cy, xx - cx)
        radius = r * (1 + 0.25 * np.cos(k * theta))
        mask = (np.hypot(xx - cx, yy - cy) < radius)[..., None]
        img = np.where(mask, fg * (0.8 + 0.2 * np.cos(12 * xx[..., None])), bg)
        rgb = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        image_id = f"img{i:04d}"
        Image.fromarray(rgb).save(out_dir / f"{image_id}.png")
        images[image_id] = rgb
    return images


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


class TrafficGenerator:
    """Publish a simulated session on the bus from a background thread.

    Parameters
    ----------
    folder : path
        Where thumbnails are written (``folder/images/<id>.png``).
    endpoint : str | None
        Publisher endpoint (broker XSUB); None = ``realtime.bus.DEFAULT_PUB_ENDPOINT``.
    n_images : int
        Gallery size (thumbnails written once).
    n_channels : int
        Channels in the signal preview (names from the ``eeg64_1000hz`` profile, numbered beyond 64).
    sfreq : float
        Preview rate of ``signal.<stream>``.
    event_interval : float
        Seconds between stimulus onsets (one retrieval + one image per onset).
    p_top1, p_top5 : float
        Simulated decoder quality.
    """

    def __init__(
        self,
        folder: str | Path,
        endpoint: str | None = None,
        n_images: int = 40,
        n_channels: int = 32,
        sfreq: float = 200.0,
        chunk_s: float = 0.05,
        event_interval: float = 1.0,
        window_s: float = 0.5,
        k: int = 5,
        p_top1: float = 0.45,
        p_top5: float = 0.8,
        seed: int = 0,
    ) -> None:
        from brainstream.models.device_profile import load_device_profile

        if not 0 < chunk_s < 1 or event_interval <= 0 or n_images < k:
            raise ValueError("need 0 < chunk_s < 1, event_interval > 0 and n_images >= k")
        self.endpoint = endpoint
        self.images = make_thumbnails(folder, n_images, seed=seed)
        self.ids = list(self.images)
        self.paths = {i: str(Path(folder) / "images" / f"{i}.png") for i in self.ids}
        names = load_device_profile("eeg64_1000hz").channels
        self.ch_names = [names[i] if i < len(names) else f"X{i + 1}" for i in range(n_channels)]
        self.sfreq, self.chunk_s, self.event_interval, self.window_s = (
            sfreq,
            chunk_s,
            event_interval,
            window_s,
        )
        self.k, self.p_top1, self.p_top5 = k, p_top1, p_top5
        self.rng = np.random.default_rng(seed)
        self.n_sent = 0
        self._alpha_phase = self.rng.uniform(0, 2 * np.pi, n_channels)
        self._gain = self.rng.uniform(0.5, 1.5, n_channels)[:, None]
        self._onsets: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- lifecycle
    def start(self) -> TrafficGenerator:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="display-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> TrafficGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- the session
    def _run(self) -> None:
        from brainstream.realtime.bus import DEFAULT_PUB_ENDPOINT, Publisher

        pub = Publisher(self.endpoint or DEFAULT_PUB_ENDPOINT, name="traffic", heartbeat_interval=0.5)
        n_chunk = max(1, round(self.sfreq * self.chunk_s))
        t_next_event = pylsl.local_clock() + 0.3
        t_status = 0.0
        pending: list[tuple[float, str]] = []
        try:
            t_last = pylsl.local_clock()
            while not self._stop.wait(self.chunk_s):
                now = pylsl.local_clock()
                if now - t_next_event > 1.0 or now - t_last > 1.0:
                    # starved (a loaded machine): skip what is over a second late instead of replaying it
                    # late, so every message still leaves near its t_sample
                    t_next_event = max(t_next_event, now)
                    t_last = max(t_last, now - self.chunk_s)
                while now >= t_next_event:
                    image_id = self.ids[int(self.rng.integers(len(self.ids)))]
                    self._publish(pub, "marker", t_sample=t_next_event, value=f"test/{image_id}")
                    self._onsets = [o for o in self._onsets if now - o[0] < 2.0] + [(t_next_event, image_id)]
                    pending.append((t_next_event + self.window_s, image_id))
                    t_next_event += self.event_interval
                n = max(1, min(int(round((now - t_last) * self.sfreq)), 10 * n_chunk))
                ts = t_last + np.arange(1, n + 1) / self.sfreq
                t_last = ts[-1]
                self._publish(
                    pub,
                    f"signal.{STREAM}",
                    [self._signal(ts), ts],
                    t_sample=float(ts[-1]),
                    ch_names=self.ch_names,
                    sfreq=self.sfreq,
                )
                while pending and pending[0][0] <= now:
                    self._window(pub, *pending.pop(0))
                if now - t_status >= 1.0:
                    t_status = now
                    self._status(pub)
        finally:
            pub.close()

    def _publish(self, pub, topic: str, arrays=(), **kw) -> None:
        pub.publish(topic, arrays, **kw)
        self.n_sent += 1

    def _signal(self, ts: np.ndarray) -> np.ndarray:
        # alpha + noise per channel, and an evoked wave 100-300 ms after each onset (visible at the markers)
        alpha = np.sin(2 * np.pi * 10 * ts[None, :] + self._alpha_phase[:, None])
        data = 0.6 * alpha + self.rng.normal(0, 0.5, (len(self.ch_names), ts.size))
        for onset, _ in self._onsets:
            lag = ts - onset
            data += 2.0 * np.exp(-(((lag - 0.15) / 0.04) ** 2)) - 1.2 * np.exp(-(((lag - 0.3) / 0.06) ** 2))
        return (data * self._gain * 1e-5).astype(np.float32)

    def _window(self, pub, t_sample: float, true_id: str) -> None:
        emb = self.rng.normal(size=64).astype(np.float32)
        emb /= np.linalg.norm(emb)
        # each stage stamps its time once; downstream messages carry the upstream entries unchanged
        trace = [["acquisition", t_sample + 0.004], ["decoder", pylsl.local_clock()]]
        pub.publish(
            f"embedding.{SUBJECT}",
            [emb],
            t_sample=t_sample,
            trace=trace,
            space="demo",
            event=f"test/{true_id}",
            image_id=true_id,
            split="test",
            window="event",
        )
        ranked = self._rank(true_id)
        scores = np.sort(self.rng.uniform(0.15, 0.6, self.k)).astype(np.float32)[::-1].copy()
        rank = ranked.index(true_id) if true_id in ranked else None
        time.sleep(0.002)  # the search itself
        pub.publish(
            "retrieval",
            [scores],
            t_sample=t_sample,
            trace=trace,
            stage="retrieval",
            space="demo",
            ids=ranked,
            paths=[self.paths[i] for i in ranked],
            true_image_id=true_id,
            rank_of_true=rank,
        )
        img = self._generated(true_id, ranked[0])
        time.sleep(0.01)  # the generator's denoising step
        pub.publish(
            "image", [img], t_sample=t_sample, trace=trace, stage="generator", image_id=true_id, skipped=0
        )
        self.n_sent += 3

    def _rank(self, true_id: str) -> list[str]:
        others = [i for i in self.ids if i != true_id]
        picks = [others[j] for j in self.rng.choice(len(others), self.k, replace=False)]
        u = self.rng.uniform()
        if u < self.p_top1:
            picks[0] = true_id
        elif u < self.p_top5:
            picks[int(self.rng.integers(1, self.k))] = true_id
        return picks

    def _generated(self, true_id: str, top_id: str) -> np.ndarray:
        a = self.images[true_id].astype(np.float32)
        b = self.images[top_id].astype(np.float32)
        mix = 0.55 * a + 0.45 * b + self.rng.normal(0, 12, a.shape)
        img = np.clip(mix, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))

    def _status(self, pub) -> None:
        nodes = {
            "acquisition": ("streaming", {"samples": self.n_sent, "gaps": 0, "reconnects": 0}),
            "decoder": ("running", {"windows": len(self._onsets)}),
            "retrieval": ("running", {"gallery_size": len(self.ids)}),
            "generator": ("running", {"skipped": 0}),
        }
        for node, (state, stats) in nodes.items():
            pub.publish(f"status.{node}", state=state, alarms=[], stats=stats)
            self.n_sent += 1


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description="publish simulated display traffic on the bus")
    parser.add_argument("--broker", action="store_true", help="also run a broker on the default endpoints")
    parser.add_argument("--endpoint", default=None, help="publisher endpoint (broker XSUB)")
    parser.add_argument("--seconds", type=float, default=math.inf)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--event-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    from brainstream.realtime.bus import Broker

    broker = Broker().start() if args.broker else None
    with tempfile.TemporaryDirectory() as folder:
        gen = TrafficGenerator(
            folder, endpoint=args.endpoint, n_channels=args.channels, event_interval=args.event_interval
        ).start()
        try:
            t_end = time.monotonic() + args.seconds
            while time.monotonic() < t_end:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            gen.stop()
            if broker is not None:
                broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
