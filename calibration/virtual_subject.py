"""The closed-loop virtual subject for calibration runs, on the presenter's (possibly accelerated) clock.

:class:`realtime.simulation.live.LiveSubject` streams in real time and reacts to an external marker stream.
A calibration run at ``--speed X`` needs the subject to live on the same :class:`VirtualClock` as the
presenter: :class:`ClockedLiveSubject` is a ``LiveSubject`` whose streaming loop reads that clock, and
which stays ``lag_s`` (virtual) behind it so that a marker pushed right after a frame reaches the subject
before the samples of its onset are generated (``late_markers`` counts any that do not).

It runs in its own process (``python -m brainstream.calibration.virtual_subject ...``, started by
:mod:`calibration.session`), like a real amplifier: the presenter's frame timing does not compete with the
generator for the interpreter. The process prints ``READY <t0>`` once its outlets are up, ``T <t>`` lines as
it streams (virtual time of the last pushed sample) and a JSON summary when stopped (SIGTERM / SIGINT).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from brainstream.realtime.simulation.live import LiveSubject

logger = logging.getLogger(__name__)


class ClockedLiveSubject(LiveSubject):
    """A reacting :class:`LiveSubject` driven by a :class:`~calibration.presenter.VirtualClock`."""

    def __init__(self, *args, clock, lag_s: float = 0.25, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.react_to:
            raise ValueError("ClockedLiveSubject reacts to a presenter: pass react_to=<marker stream name>")
        self.clock = clock
        self.lag_s = float(lag_s)
        self.on_progress = None  # callable(t_virtual) after each push

    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        s = self.subject
        self.t0 = self.clock.now()
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                while not self._stop.is_set():
                    self._poll_markers()
                    target = int((self.clock.now() - self.lag_s - self.t0) * s.sfreq)
                    n = target - s.n_generated
                    if n > 0:
                        self._push(s.generate(min(n, int(s.sfreq))))  # ≤ 1 s per push: markers stay fresh
                        if self.on_progress is not None:
                            self.on_progress(self.t0 + s.n_generated / s.sfreq)
                        if n > s.sfreq:
                            continue  # behind: catch up without sleeping
                    self._stop.wait(self.chunk_s)
        except Exception as exc:  # keep the reason; the owner sees it in stats and the log
            logger.exception("virtual subject stopped")
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    from brainstream.calibration.presenter import VirtualClock
    from brainstream.models.gallery import Gallery
    from brainstream.realtime.simulation.subject import VirtualSubject

    parser = argparse.ArgumentParser(description="closed-loop virtual subject for a calibration run")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--gallery", required=True)
    parser.add_argument("--name", required=True, help="signal stream name")
    parser.add_argument("--react-to", required=True, help="the presenter's marker stream")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--origin", type=float, required=True, help="LSL time origin of the shared clock")
    parser.add_argument("--image-s", type=float, default=0.5)
    parser.add_argument("--snr", type=float, default=None)
    parser.add_argument("--shared-fraction", type=float, default=None, help="None: the simulator's default")
    args = parser.parse_args(argv)
    gallery = Gallery.load(args.gallery)
    kwargs = {} if args.snr is None else {"snr": args.snr}
    if args.shared_fraction is not None:
        kwargs["shared_fraction"] = args.shared_fraction
    subject = VirtualSubject(args.profile, gallery, seed=args.seed, **kwargs)
    clock = VirtualClock(args.speed, origin=args.origin)
    live = ClockedLiveSubject(
        subject, name=args.name, react_to=args.react_to, image_s=args.image_s, clock=clock,
        chunk_s=0.02, resolve_timeout=30.0, lag_s=max(0.1, 0.01 * args.speed),
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    last = [0.0]

    def progress(t: float) -> None:
        if t - last[0] >= 0.25 * max(1.0, args.speed) or stop.is_set():
            last[0] = t
            print(f"T {t:.6f}", flush=True)

    live.on_progress = progress
    try:
        live.start()
    except (LookupError, ValueError) as exc:
        print(f"ERROR {exc}", flush=True)
        return 2
    while live.t0 is None and live.running:  # t0 is set by the streaming thread as it starts
        stop.wait(0.001)
    print(f"READY {live.t0:.6f}", flush=True)
    while live.running and not stop.is_set():
        stop.wait(0.05)
    live.stop()
    print(f"T {live.t0 + subject.n_generated / subject.sfreq:.6f}", flush=True)
    print("SUMMARY " + json.dumps(live.summary(), default=str), flush=True)
    return 0 if not live.stats.errors else 1


if __name__ == "__main__":
    sys.exit(main())
