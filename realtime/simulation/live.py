"""Live virtual subject: streams a :class:`VirtualSubject` over LSL in real time.

One outlet carries the signal (``type`` MEG or EEG, the profile's channels, float32, SI units), pushed in
chunks of ``chunk_s`` whose sample times are ``t0 + n / sfreq`` on ``pylsl.local_clock()``, so the stream
keeps exact pace with the LSL clock however late a chunk is pushed.

Two ways to get stimuli:

- self-paced: the subject plays an RSVP schedule (:func:`realtime.simulation.offline.make_rsvp_schedule`)
  and announces each onset on its own marker outlet (``<name>-markers``, ``train/<id>``, ``test/<id>``);
- reacting: ``react_to=NAME`` resolves an external marker stream (a calibration presenter's) and responds to
  whatever image each stimulus marker names, at the marker's time (after LSL clock correction). No marker
  outlet is created then: the presenter's stream is the one source of events. Markers whose image id is
  unknown to the gallery are counted and logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from brainstream.models.events import parse_stimulus_marker
from brainstream.realtime.simulation.offline import RSVPDesign, Trial, make_rsvp_schedule
from brainstream.realtime.simulation.subject import VirtualSubject

logger = logging.getLogger(__name__)

LSL_TYPES = {"meg": "MEG", "eeg": "EEG"}


@dataclass
class LiveStats:
    """What the live subject has done so far."""

    samples_pushed: int = 0
    chunks_pushed: int = 0
    markers_sent: int = 0
    markers_received: int = 0
    stimuli: int = 0
    unknown_images: int = 0
    late_markers: int = 0  # markers whose onset was already streamed when they arrived
    expired_markers: int = 0  # late markers whose whole response was already streamed: nothing left to add
    ignored_markers: int = 0  # non-stimulus markers (breaks, run starts...)
    errors: list[str] = field(default_factory=list)


class LiveSubject:
    """Stream a virtual subject over LSL (signal + markers) in real time.

    Parameters
    ----------
    subject : VirtualSubject
        The generator (profile, gallery, seed, SNR).
    name : str
        Signal stream name; the marker stream is ``<name>-markers``.
    source_id : str | None
        LSL source id (default ``brainstream-sim-<profile>-<seed>``); markers get ``<source_id>-markers``.
    react_to : str | None
        Name of an external marker stream to respond to; None plays ``design`` self-paced.
    design : RSVPDesign | None
        Self-paced schedule (default: the offline default, 600 train + 50 test × 4).
    image_s : float
        Assumed image duration when reacting to onset markers (the offset response follows it).
    chunk_s : float
        Push period (s).
    resolve_timeout : float
        How long :meth:`start` waits for the ``react_to`` stream to appear.
    """

    def __init__(
        self,
        subject: VirtualSubject,
        *,
        name: str = "brainstream-sim",
        source_id: str | None = None,
        react_to: str | None = None,
        design: RSVPDesign | None = None,
        image_s: float = 0.5,
        chunk_s: float = 0.02,
        resolve_timeout: float = 10.0,
    ) -> None:
        if chunk_s <= 0 or chunk_s > 1.0:
            raise ValueError(f"chunk_s must be in (0, 1] seconds, got {chunk_s}")
        self.subject = subject
        self.name = name
        self.source_id = source_id or f"brainstream-sim-{subject.profile.name}-{subject.seed}"
        self.react_to = react_to
        self.design = design or RSVPDesign()
        self.image_s = float(image_s)
        self.chunk_s = float(chunk_s)
        self.resolve_timeout = float(resolve_timeout)
        self.stats = LiveStats()
        self.t0: float | None = None
        self._outlet = None
        self._marker_outlet = None
        self._inlet = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._trials: list[Trial] = []
        self._next_trial = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LiveSubject:
        """Create the outlets (and resolve ``react_to``), then stream on a background thread."""
        if self._thread is not None:
            raise RuntimeError("LiveSubject already started")
        self._open_outlets()
        if self.react_to:
            self._open_inlet()
        else:
            self._trials = make_rsvp_schedule(self.subject.gallery.ids, self.design)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"live-subject-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop streaming and close the inlet before the outlets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._inlet is not None:
            self._inlet.close_stream()
            self._inlet = None
        self._marker_outlet = None
        self._outlet = None

    def __enter__(self) -> LiveSubject:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def finished(self) -> bool:
        """Self-paced mode: every trial of the design has been shown (and its response streamed)."""
        if self.react_to or not self._trials:
            return False
        end = self._trials[-1].offset + self.design.isi_s
        return self.subject.n_generated / self.subject.sfreq >= end

    def wait(self, seconds: float | None = None) -> None:
        """Block until ``seconds`` have been streamed, the design is finished, or the thread ended."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.running and not self.finished:
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    # ------------------------------------------------------------------ set-up
    def _open_outlets(self) -> None:
        import pylsl

        from brainstream.realtime.lsl_info import make_stream_info

        s = self.subject
        stype = LSL_TYPES[s.profile.modality]
        info = make_stream_info(
            self.name, stype, s.ch_names, s.sfreq, ch_types=[stype] * s.n_channels,
            units=[s.profile.unit] * s.n_channels, source_id=self.source_id,
        )  # fmt: skip
        info.desc().append_child_value("brainstream_simulation", s.metadata_json())
        chunk = max(1, int(round(self.chunk_s * s.sfreq)))
        self._outlet = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=60)
        if not self.react_to:
            minfo = make_stream_info(
                f"{self.name}-markers", "Markers", ["marker"], 0.0, channel_format="string",
                source_id=f"{self.source_id}-markers",
            )  # fmt: skip
            self._marker_outlet = pylsl.StreamOutlet(minfo)

    def _open_inlet(self) -> None:
        import pylsl

        found = pylsl.resolve_byprop("name", self.react_to, minimum=1, timeout=self.resolve_timeout)
        if not found:
            raise LookupError(
                f"no LSL stream named {self.react_to!r} appeared within {self.resolve_timeout:g} s; "
                "start the marker source first (e.g. the calibration presenter) or check the name "
                "(brainstream streams)"
            )
        markers = [i for i in found if i.channel_format() == pylsl.cf_string]
        if not markers:
            raise ValueError(
                f"stream {self.react_to!r} is not a string marker stream (channel format "
                f"{found[0].channel_format()}); point --react-to at the presenter's marker stream"
            )
        self._inlet = pylsl.StreamInlet(
            markers[0], max_buflen=60, processing_flags=pylsl.proc_clocksync, recover=False
        )
        self._inlet.open_stream(timeout=self.resolve_timeout)

    # ------------------------------------------------------------------ streaming loop
    def _run(self) -> None:
        import pylsl

        s = self.subject
        self.t0 = pylsl.local_clock()
        try:
            while not self._stop.is_set():
                now = pylsl.local_clock()
                if self._inlet is not None:
                    self._poll_markers()
                else:
                    self._schedule_trials(now)
                target = int((now - self.t0) * s.sfreq)
                n = target - s.n_generated
                if n > 0:
                    self._push(s.generate(n))
                if self._marker_outlet is not None:
                    self._send_due_markers(now)
                if self.finished:
                    break
                self._stop.wait(self.chunk_s)
        except Exception as exc:  # keep the reason; the owner sees it in stats and the log
            logger.exception("live subject stopped")
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")

    def _push(self, data: np.ndarray) -> None:
        last = self.subject.n_generated - 1
        self._outlet.push_chunk(np.ascontiguousarray(data.T), timestamp=self.t0 + last / self.subject.sfreq)
        self.stats.samples_pushed += data.shape[1]
        self.stats.chunks_pushed += 1

    def _schedule_trials(self, now: float) -> None:
        """Self-paced: hand the subject every trial starting within the next second (ahead of its samples)."""
        horizon = now - self.t0 + 1.0
        while self._next_trial < len(self._trials) and self._trials[self._next_trial].onset <= horizon:
            trial = self._trials[self._next_trial]
            self.subject.add_stimulus(trial.onset, trial.offset, trial.image_id)
            self.stats.stimuli += 1
            self._next_trial += 1

    def _send_due_markers(self, now: float) -> None:
        """Push the marker of each trial whose onset time has come, stamped with its exact onset."""
        while self.stats.markers_sent < self._next_trial:
            trial = self._trials[self.stats.markers_sent]
            if self.t0 + trial.onset > now:
                break
            self._marker_outlet.push_sample([trial.marker], self.t0 + trial.onset)
            self.stats.markers_sent += 1

    def _poll_markers(self) -> None:
        while True:
            sample, ts = self._inlet.pull_sample(timeout=0.0)
            if sample is None:
                return
            self.stats.markers_received += 1
            self.handle_marker(str(sample[0]), ts + self._inlet.time_correction(timeout=0.5))

    def handle_marker(self, value: str, timestamp: float) -> bool:
        """Respond to one marker at LSL time ``timestamp``; True if it started a stimulus."""
        event = parse_stimulus_marker(value)
        if event is None:
            self.stats.ignored_markers += 1
            return False
        if not _known(self.subject.gallery, event.image_id):
            self.stats.unknown_images += 1
            logger.warning("marker %r names an image the gallery does not know; ignored", value)
            return False
        onset = timestamp - self.t0
        start = onset * self.subject.sfreq
        if start < self.subject.n_generated:
            self.stats.late_markers += 1
            if start + self._response_samples() <= self.subject.n_generated:
                # a marker delayed past the subject's whole response (a loaded machine, an accelerated
                # clock): the response can no longer reach the stream, and the subject's generator
                # expects stimuli that overlap what it has yet to generate
                self.stats.expired_markers += 1
                logger.warning("marker %r arrived after its whole response was streamed; ignored", value)
                return False
        self.subject.add_stimulus(onset, onset + self.image_s, event.image_id)
        self.stats.stimuli += 1
        return True

    def _response_samples(self) -> int:
        """Samples from an onset to the end of everything it evokes: the offset response and the alpha
        suppression. Read here, not asked of the subject: the subject's code is fingerprinted, and a new
        method there would make every model trained on it stale."""
        s = self.subject
        offset_end = int(round(self.image_s * s.sfreq)) + s.responses.n_len
        return max(offset_end, int(s._erd_kernel.shape[1]))

    def summary(self) -> dict:
        """Stats and identity as one JSON-ready dict."""
        return {
            "name": self.name,
            "source_id": self.source_id,
            "react_to": self.react_to,
            "sfreq": self.subject.sfreq,
            "n_channels": self.subject.n_channels,
            "seconds": self.subject.n_generated / self.subject.sfreq,
            **self.stats.__dict__,
            "subject": json.loads(self.subject.metadata_json()),
        }


def _known(gallery, image_id: str) -> bool:
    try:
        gallery.index_of(image_id)
    except KeyError:
        return False
    return True
