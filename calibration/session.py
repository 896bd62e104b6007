"""A calibration run: present the protocol while recording, then adapt, report and save the profile.

Recording (:func:`record_run`): the presenter's marker outlet and window open first; with
``virtual_subject`` a closed-loop virtual subject process starts and reacts to those markers on the shared
clock; the :class:`~realtime.recording.Recorder` records the signal stream and the marker stream into
``SUBJECTS_DIR/<ID>/runs/run-NNN.xdf``; the presenter runs the remaining trials; the recording continues
until the last window is complete, then everything stops cleanly.

Resuming: each run writes ``run-NNN.json`` (protocol digest, first trial, subject seed) BEFORE it records,
and progress is read back from the XDF files themselves (a trial counts when its whole window was
recorded), so a calibration interrupted at any point — Escape, Ctrl-C, a crash — continues as a new run
from the first trial that is missing, and every run's recording is used.

Adaptation (:func:`finish_calibration`): all runs → preprocessing (subject scaler) → zero-shot, ridge,
adapted encoders (:mod:`calibration.adaptation`) → reference (virtual subjects) → report → profile.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.calibration.profile import RUNS_DIR, subject_dir
from brainstream.calibration.protocol import ProtocolConfig, Schedule, build_schedule
from brainstream.calibration.runs import CalibrationError, read_run_state, run_files

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ progress
@dataclass
class RunInfo:
    index: int
    xdf: Path
    state_file: Path
    start_index: int
    completed: int = 0  # schedule trials whose whole window is in this run's recording


def recorded_progress(
    runs_dir: Path, schedule: Schedule, config: ProtocolConfig, virtual_subject: int | None
) -> list[RunInfo]:
    """What every earlier run recorded: checks each run belongs to this protocol and subject."""
    from brainstream.calibration.data import read_run

    out = []
    for k, (state_path, xdf) in enumerate(run_files(runs_dir)):
        state = read_run_state(state_path)
        if state.get("protocol_digest") != schedule.config_digest:
            raise CalibrationError(
                f"{state_path.parent} holds runs of another protocol ({state.get('protocol')!r}, digest "
                f"{state.get('protocol_digest')}); use another --subject id or move those runs away"
            )
        if state.get("virtual_subject") != virtual_subject:
            raise CalibrationError(
                f"{state_path} was recorded with virtual subject {state.get('virtual_subject')!r}, this run "
                f"asks for {virtual_subject!r}; use the same --virtual-subject (or none) to resume"
            )
        info = RunInfo(k + 1, xdf, state_path, int(state["start_index"]))
        if xdf.is_file() and xdf.stat().st_size > 0:
            try:
                run = read_run(xdf)
            except Exception as exc:  # nothing usable in it (cut before the first chunk)
                logger.warning("run %s has no usable data (%s); its trials will be shown again", xdf, exc)
                out.append(info)
                continue
            info.completed = _completed(run, schedule, info.start_index, config.window.tmax)
        out.append(info)
    return out


def _completed(run: Any, schedule: Schedule, start: int, tmax: float) -> int:
    """Leading schedule trials of this run whose window ends inside the recorded signal."""
    last_t = float(run.recording.timestamps[-1]) if run.recording.timestamps.size else -np.inf
    n = 0
    stim = [(t, m) for t, m in zip(run.marker_times, run.markers, strict=True) if "/" in m]
    for t, m in stim:
        k = start + n
        if k >= len(schedule) or schedule.trials[k].marker != m:
            break
        if t + tmax + 0.05 > last_t:
            break
        n += 1
    return n


def next_trial(runs: list[RunInfo]) -> int:
    """First schedule trial not yet recorded (trials are shown in order; each run resumes the last)."""
    nxt = 0
    for r in runs:
        if r.start_index <= nxt:
            nxt = max(nxt, r.start_index + r.completed)
    return nxt


# ------------------------------------------------------------------------------------------ virtual subject
class SubjectProcess:
    """The closed-loop virtual subject in its own process
    (``python -m brainstream.calibration.virtual_subject``)."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brainstream.calibration.virtual_subject", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.ready = threading.Event()
        self.t0: float | None = None
        self.t_streamed = -np.inf
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "READY":
                self.t0 = float(rest)
                self.ready.set()
            elif kind == "T":
                self.t_streamed = float(rest)
            elif kind == "SUMMARY":
                self.summary = json.loads(rest)
            elif kind == "ERROR":
                self.error = rest
                self.ready.set()
        self.ready.set()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            if "INFO" not in line:  # liblsl chatter
                self._stderr = (self._stderr + [line.rstrip()])[-20:]

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout) or self.t0 is None:
            self.stop()
            detail = self.error or "\n".join(self._stderr[-5:]) or "no output"
            raise CalibrationError(f"the virtual subject did not start: {detail}")

    def wait_streamed(self, t: float, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.t_streamed < t and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.t_streamed >= t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.05)  # let the reader thread take the SUMMARY line


# ------------------------------------------------------------------------------------------------ recording
@dataclass
class RunOutcome:
    run: int
    xdf: Path
    start_index: int
    next_index: int
    aborted: bool
    reason: str | None
    seconds: float
    presenter: dict[str, Any] = field(default_factory=dict)
    subject: dict[str, Any] | None = None
    recorder: dict[str, Any] = field(default_factory=dict)


def record_run(
    config: ProtocolConfig,
    schedule: Schedule,
    gallery: Any,
    runs_dir: Path,
    start_index: int,
    *,
    virtual_subject: int | None = None,
    signal_stream: str | None = None,
    speed: float = 1.0,
    max_trials: int | None = None,
    progress: bool = True,
    stream_tag: str | None = None,
) -> RunOutcome:
    """Record one run from ``start_index``: presenter + (virtual) subject + recorder."""
    from brainstream.calibration.presenter import Presenter, VirtualClock
    from brainstream.realtime.recording import Recorder

    if virtual_subject is None and not signal_stream:
        raise CalibrationError("name the device's LSL stream (--stream NAME) or use --virtual-subject SEED")
    if virtual_subject is None and speed != 1.0:
        raise CalibrationError("--speed only works with --virtual-subject (a person watches in real time)")
    t_start = time.perf_counter()
    runs_dir.mkdir(parents=True, exist_ok=True)
    index = len(run_files(runs_dir)) + 1
    state_file = runs_dir / f"run-{index:03d}.json"
    xdf = state_file.with_suffix(".xdf")
    tag = stream_tag or uuid.uuid4().hex[:8]
    marker_name = f"brainstream-presenter-{tag}"
    clock = VirtualClock(speed)
    state = {
        "run": index, "protocol": config.name, "protocol_digest": schedule.config_digest,
        "start_index": start_index, "virtual_subject": virtual_subject, "speed": speed,
        "marker_stream": marker_name, "state": "recording", "clock_origin": clock.origin,
    }  # fmt: skip
    presenter = Presenter(
        config, schedule, gallery, marker_name=marker_name, start_index=start_index, max_trials=max_trials,
        clock=clock, progress=progress,
    )  # fmt: skip
    subject = None
    recorder = None
    try:
        presenter.open()
        if virtual_subject is not None:
            signal_stream = f"brainstream-virtual-{virtual_subject}-{tag}"
            args = [
                "--seed", str(virtual_subject), "--profile", config.subject.profile,
                "--gallery", str(gallery.root), "--name", signal_stream, "--react-to", marker_name,
                "--speed", repr(speed), "--origin", repr(clock.origin), "--image-s", repr(config.image_s),
            ]  # fmt: skip
            for name, value in config.subject.simulator_kwargs().items():
                args += [f"--{name.replace('_', '-')}", repr(value)]
            subject = SubjectProcess(args)
            subject.wait_ready(timeout=120.0)
        state["signal_stream"] = signal_stream
        state_file.write_text(json.dumps(state, indent=1) + "\n")
        recorder = Recorder(xdf).start()
        try:
            recorder.add_stream(signal_stream, timeout=30.0)
        except LookupError as exc:
            raise CalibrationError(str(exc)) from None
        recorder.add_stream(marker_name, timeout=10.0)
        presenter.run()
        _wait_tail(config, clock, presenter, subject)
    finally:
        if recorder is not None:
            recorder.stop()
        if subject is not None:
            subject.stop()
        presenter.close()
    res = presenter.result
    state.update(
        state="interrupted" if res.aborted else "complete",
        next_index=res.next_index,
        presenter=res.summary(),
        seconds=round(time.perf_counter() - t_start, 1),
    )
    state_file.write_text(json.dumps(state, indent=1) + "\n")
    if subject is not None and subject.summary and subject.summary.get("errors"):
        raise CalibrationError(f"the virtual subject failed: {subject.summary['errors'][-1]}")
    return RunOutcome(
        index, xdf, start_index, res.next_index, res.aborted, res.abort_reason,
        time.perf_counter() - t_start, res.summary(), subject.summary if subject else None,
        recorder.stats if recorder else {},
    )  # fmt: skip


def _wait_tail(config: ProtocolConfig, clock: Any, presenter: Any, subject: SubjectProcess | None) -> None:
    """Keep recording until the last shown trial's window (and the protocol's tail) is in the file."""
    if not presenter.result.shown:
        return
    last_onset = presenter.result.shown[-1][1]
    until = last_onset + max(config.tail_s, config.window.tmax + 0.2)
    if subject is not None:
        if not subject.wait_streamed(until, timeout=60.0 + clock.real_seconds(until - clock.now())):
            logger.warning("the virtual subject did not stream up to the end of the last window")
    else:
        time.sleep(max(0.0, clock.real_seconds(until - clock.now())))
    time.sleep(0.6)  # the recorder hands chunks to the writer every 0.25 s


# ---------------------------------------------------------------------------------------------- whole run
@dataclass
class CalibrationOutcome:
    subject_id: str
    complete: bool
    runs: list[RunOutcome]
    next_index: int
    n_schedule: int
    summary: dict[str, Any] | None = None  # the JSON (when complete)
    seconds: dict[str, float] = field(default_factory=dict)
    profile: Any = None


def calibrate(
    subject_id: str,
    config: ProtocolConfig,
    subjects_dir: str | Path,
    *,
    virtual_subject: int | None = None,
    signal_stream: str | None = None,
    speed: float = 1.0,
    max_trials: int | None = None,
    progress: bool = True,
    gallery: Any = None,
    adapt: bool = True,
) -> CalibrationOutcome:
    """Record (or resume) the protocol for one subject, then adapt and save the profile when complete."""
    from brainstream.calibration.pretrained import check_seed

    gallery = gallery if gallery is not None else load_gallery(config)
    check_seed(config, virtual_subject)
    schedule = build_schedule(config, list(gallery.ids))
    root = subject_dir(subjects_dir, subject_id)
    runs_dir = root / RUNS_DIR
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    runs = recorded_progress(runs_dir, schedule, config, virtual_subject) if runs_dir.is_dir() else []
    start = next_trial(runs)
    outcomes = []
    if start < len(schedule):
        if runs and progress:
            print(
                f"resuming the calibration of {subject_id} at trial {start + 1}/{len(schedule)}", flush=True
            )
        out = record_run(
            config, schedule, gallery, runs_dir, start, virtual_subject=virtual_subject,
            signal_stream=signal_stream, speed=speed, max_trials=max_trials, progress=progress,
        )  # fmt: skip
        outcomes.append(out)
        start = out.next_index
    seconds["recording"] = time.perf_counter() - t
    outcome = CalibrationOutcome(subject_id, start >= len(schedule), outcomes, start, len(schedule))
    outcome.seconds = seconds
    if outcome.complete and adapt:
        from brainstream.calibration.finish import finish_calibration

        outcome.summary, outcome.profile, more = finish_calibration(
            subject_id, config, subjects_dir, gallery=gallery, virtual_subject=virtual_subject,
            progress=progress,
        )  # fmt: skip
        seconds.update(more)
    return outcome


def load_gallery(config: ProtocolConfig):
    from brainstream.models.gallery import Gallery

    if config.gallery:
        return Gallery.load(config.gallery)
    from brainstream.models.demo_gallery import default_gallery_dir

    return Gallery.load(default_gallery_dir())
