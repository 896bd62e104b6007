"""The RSVP presenter: a Qt window that shows the calibration images and stamps each onset on LSL.

What is on screen: a grey background, a fixation cross (always, under the images too), the image, a
photodiode patch in a corner (white while an image is up, black otherwise: a light sensor there gives the
true onset), a progress line (trial, blocks, time left) and break screens. The terminal shows the same
progress with tqdm.

Timing: every state change is painted synchronously (``QWidget.repaint``) and the onset marker
(``train/<id>``, ``test/<id>``, ``catch/<id>``, :mod:`models.events`) is stamped with the clock read right
after that paint returned — the closest thing to the frame flip Qt offers without a vsync'd swap (a
photodiode on the patch measures the remaining display lag). The next change is timed from the actual
stamp, so a late frame never shortens the following image. Non-stimulus markers (``run_start``,
``break_start``, ``break_end``, ``response``, ``run_end``, ``aborted``) carry no ``/``.

Speed: ``speed > 1`` runs the protocol faster than real time for tests and demos. Time then runs on a
:class:`VirtualClock` (LSL time scaled around an origin) that the closed-loop virtual subject shares, so the
recording looks like a real-time session to every reader. Keys: space/any key = response (catch trials) or
end a break early; Escape = stop (the calibration can be resumed).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainstream.calibration.protocol import ProtocolConfig, Schedule, ScheduledTrial

logger = logging.getLogger(__name__)

RESPONSE_WINDOW_S = 1.5  # a key press this soon after a catch onset counts as a hit


class VirtualClock:
    """LSL time, optionally accelerated: ``origin + (local_clock() - origin) * speed``.

    With ``speed == 1`` it is ``pylsl.local_clock()`` itself. Processes that share ``origin`` and ``speed``
    share the clock (the presenter and the closed-loop virtual subject).
    """

    def __init__(self, speed: float = 1.0, origin: float | None = None) -> None:
        import pylsl

        if not (np.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        self._local_clock = pylsl.local_clock
        self.speed = float(speed)
        self.origin = float(self._local_clock() if origin is None else origin)

    def now(self) -> float:
        return self.origin + (self._local_clock() - self.origin) * self.speed

    def real_seconds(self, virtual_seconds: float) -> float:
        return virtual_seconds / self.speed


@dataclass
class PresenterResult:
    """What one presenter run did."""

    start_index: int
    next_index: int  # first trial NOT shown (== len(schedule) when complete)
    shown: list[tuple[int, float]] = field(default_factory=list)  # (trial index, onset stamp)
    aborted: bool = False
    abort_reason: str | None = None
    catch_total: int = 0
    catch_hits: int = 0
    false_alarms: int = 0
    onset_lag_ms: list[float] = field(default_factory=list)  # stamp − planned time (virtual ms)

    @property
    def complete(self) -> bool:
        return not self.aborted

    def summary(self) -> dict[str, Any]:
        lag = np.asarray(self.onset_lag_ms) if self.onset_lag_ms else np.zeros(1)
        return {
            "start_index": self.start_index,
            "next_index": self.next_index,
            "shown": len(self.shown),
            "aborted": self.aborted,
            "abort_reason": self.abort_reason,
            "catch_total": self.catch_total,
            "catch_hits": self.catch_hits,
            "false_alarms": self.false_alarms,
            "onset_lag_ms": {"median": float(np.median(lag)), "p95": float(np.percentile(lag, 95))},
        }


def ensure_qapp():
    """The QApplication (created if needed; QT_QPA_PLATFORM=offscreen works without a screen)."""
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


class Presenter:
    """Run (part of) a calibration schedule in a Qt window with an LSL marker outlet.

    Parameters
    ----------
    config : ProtocolConfig
        Timing, display settings.
    schedule : Schedule
        All trials; the run shows ``schedule.trials[start_index:]``.
    gallery : Gallery
        Where the images come from (``gallery.image_path(id)``).
    marker_name : str
        Name of the LSL marker outlet (type ``Markers``, strings, irregular rate).
    source_id : str | None
        LSL source id of the outlet (default ``<marker_name>``).
    start_index : int
        First trial to show (resuming).
    max_trials : int | None
        Stop (as interrupted) after this many trials: for tests of resuming.
    speed : float
        Faster than real time (> 1) for tests and demos.
    clock : VirtualClock | None
        Shared clock (default: a new one with ``speed``).
    progress : bool
        tqdm progress bar in the terminal.
    """

    def __init__(
        self,
        config: ProtocolConfig,
        schedule: Schedule,
        gallery: Any,
        *,
        marker_name: str,
        source_id: str | None = None,
        start_index: int = 0,
        max_trials: int | None = None,
        speed: float = 1.0,
        clock: VirtualClock | None = None,
        progress: bool = True,
    ) -> None:
        if not 0 <= start_index <= len(schedule):
            raise ValueError(f"start_index must be in [0, {len(schedule)}], got {start_index}")
        self.config = config
        self.schedule = schedule
        self.gallery = gallery
        self.marker_name = marker_name
        self.source_id = source_id or marker_name
        self.clock = clock or VirtualClock(speed)
        self.speed = self.clock.speed
        self.start_index = start_index
        self.stop_index = (
            len(schedule) if max_trials is None else min(len(schedule), start_index + max_trials)
        )
        self.progress = progress
        self.result = PresenterResult(start_index, start_index)
        self.outlet = None
        self.window = None
        self._app = None
        self._timer = None
        self._bar = None
        self._abort = threading.Event()
        self._state = "idle"
        self._trial: ScheduledTrial | None = None
        self._next_index = start_index
        self._planned = 0.0
        self._catch_onsets: list[float] = []
        self._pixmaps: dict[str, Any] = {}
        self.on_frame = None  # callable(state, stamp) after each painted state change (tests, logging)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> Presenter:
        """Create the marker outlet and the window (call before recording starts, then :meth:`run`)."""
        import pylsl

        from brainstream.realtime.lsl_info import make_stream_info

        info = make_stream_info(
            self.marker_name, "Markers", ["marker"], 0.0, channel_format="string", source_id=self.source_id
        )
        info.desc().append_child_value("brainstream_presenter", f"speed={self.speed:g}")
        self.outlet = pylsl.StreamOutlet(info)
        self._app = ensure_qapp()
        from brainstream.calibration._window import PresenterWindow

        self.window = PresenterWindow(self)
        if self.config.display.fullscreen:
            self.window.showFullScreen()
        else:
            self.window.resize(self.config.display.width, self.config.display.height)
            self.window.show()
        return self

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.window is not None:
            self.window.close()
            self.window.deleteLater()
            self.window = None
        self.outlet = None

    def abort(self, reason: str = "stopped by the user") -> None:
        """Stop after the current frame (thread-safe); the run counts as interrupted."""
        self.result.abort_reason = reason
        self._abort.set()
        if self._timer is not None and threading.current_thread() is threading.main_thread():
            self._timer.stop()
            self._timer.start(0)  # handle it now, not at the next scheduled change

    def run(self) -> PresenterResult:
        """Show the trials (blocking, runs the Qt event loop) and return what was shown."""
        from PySide6.QtCore import QEventLoop, Qt, QTimer
        from tqdm import tqdm

        if self.outlet is None:
            self.open()
        self._bar = tqdm(
            total=len(self.schedule), initial=self.start_index, unit="trial", desc="calibration",
            disable=not self.progress, dynamic_ncols=True,
        )  # fmt: skip
        self._loop = QEventLoop()
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._advance)
        previous = _install_sigint(self)
        try:
            self._push("run_start")
            self._enter_fixation(self.clock.now())
            self._loop.exec()
        finally:
            _restore_sigint(previous)
            self._timer.stop()
        self._push("aborted" if self.result.aborted else "run_end")
        self.result.next_index = self._next_index
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return self.result

    # ------------------------------------------------------------------ state machine
    def _schedule_in(self, virtual_s: float) -> None:
        self._planned = self._last_stamp + virtual_s
        real_ms = max(0, int(round(1000 * self.clock.real_seconds(self._planned - self.clock.now()))))
        self._timer.start(real_ms)

    def _advance(self) -> None:
        if self._abort.is_set():
            self._finish(aborted=True)
            return
        now = self.clock.now()
        if now < self._planned - 0.0005 * self.speed:  # woke early: wait the rest
            self._timer.start(max(0, int(1000 * self.clock.real_seconds(self._planned - now))))
            return
        state = self._state
        if state in ("fixation", "blank"):
            if self._next_index >= self.stop_index:
                self._finish(aborted=self._next_index < len(self.schedule))
                return
            trial = self.schedule.trials[self._next_index]
            if state == "blank" and trial.block != self._trial.block:
                self._enter_break()
                return
            self._show_image(trial)
        elif state == "image":
            self._set_state("blank")
            self._schedule_in(self._trial.isi_s)
        elif state == "break":
            self._push("break_end")
            self._enter_fixation(now)

    def _enter_fixation(self, now: float) -> None:
        self._set_state("fixation")
        self._schedule_in(self.config.fixation_s)

    def _enter_break(self) -> None:
        self._set_state("break")
        self._push("break_start", self._last_stamp)
        self._schedule_in(self.config.break_s)

    def end_break(self) -> None:
        """A key press during a break: resume now."""
        if self._state == "break":
            self._timer.stop()
            self._planned = self.clock.now()
            self._advance()

    def _show_image(self, trial: ScheduledTrial) -> None:
        planned = self._planned
        self._trial = trial
        self._set_state("image")  # paints, stamps self._last_stamp right after the paint returned
        stamp = self._last_stamp
        self.outlet.push_sample([trial.marker], stamp)
        self.result.shown.append((trial.index, stamp))
        self.result.onset_lag_ms.append(1000.0 * (stamp - planned) / self.speed)
        if trial.split == "catch":
            self.result.catch_total += 1
            self._catch_onsets.append(stamp)
        self._next_index = trial.index + 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"{self.time_left_s() / 60:.1f} min left (at speed {self.speed:g})")
        self._schedule_in(self.config.image_s)
        self._preload(self._next_index)

    def _set_state(self, state: str) -> None:
        self._state = state
        if self.window is not None:
            self.window.repaint()
        self._last_stamp = self.clock.now()
        if self.on_frame is not None:
            self.on_frame(state, self._last_stamp)

    def _finish(self, aborted: bool) -> None:
        self._timer.stop()
        self.result.aborted = aborted
        if aborted and self.result.abort_reason is None:
            self.result.abort_reason = "stopped before the end of the protocol"
        self._set_state("done")
        self._loop.quit()

    def _push(self, value: str, stamp: float | None = None) -> None:
        if self.outlet is not None:
            self.outlet.push_sample([value], self.clock.now() if stamp is None else stamp)

    # ------------------------------------------------------------------ input
    def key_pressed(self, key: str) -> None:
        """Escape stops; any other key is a response (or ends a break)."""
        if key == "escape":
            self.abort("Escape pressed")
            return
        if self._state == "break":
            self.end_break()
            return
        now = self.clock.now()
        self._push("response", now)
        window = RESPONSE_WINDOW_S
        pending = [t for t in self._catch_onsets if 0 <= now - t <= window]
        if pending:
            self._catch_onsets.remove(pending[0])
            self.result.catch_hits += 1
        else:
            self.result.false_alarms += 1

    # ------------------------------------------------------------------ what the window shows
    @property
    def state(self) -> str:
        return self._state

    @property
    def current_trial(self) -> ScheduledTrial | None:
        return self._trial

    def time_left_s(self) -> float:
        """Real seconds left (at the current speed), breaks included."""
        return self.clock.real_seconds(self.schedule.duration_s(self.config, self._next_index))

    def status_text(self) -> str:
        n = len(self.schedule)
        block = (self._trial.block + 1) if self._trial else 1
        left = self.time_left_s()
        return (
            f"trial {self._next_index}/{n} · block {block}/{self.schedule.n_blocks} · "
            f"{int(left // 60)}:{int(left % 60):02d} left"
        )

    def pixmap(self, image_id: str):
        if image_id not in self._pixmaps:
            self._preload_id(image_id)
        return self._pixmaps[image_id]

    def _preload(self, index: int) -> None:
        if index < len(self.schedule):
            self._preload_id(self.schedule.trials[index].image_id)

    def _preload_id(self, image_id: str) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtGui import QPixmap

        if image_id in self._pixmaps:
            return
        px = self.config.display.image_px
        pix = QPixmap(str(self.gallery.image_path(image_id)))
        if pix.isNull():
            raise RuntimeError(
                f"could not read the image of {image_id!r} ({self.gallery.image_path(image_id)})"
            )
        self._pixmaps[image_id] = pix.scaled(
            px, px, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        if len(self._pixmaps) > 64:  # keep memory bounded on big galleries
            self._pixmaps.pop(next(iter(self._pixmaps)))


def _install_sigint(presenter: Presenter):
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *_: presenter.abort("interrupted (Ctrl-C)"))


def _restore_sigint(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
