"""The display's main window: panels laid out on one screen, drawn as bus messages arrive; keys, screenshots.

Nothing here polls at a frame rate. The bus thread (:class:`~realtime.display.bus_thread.BusThread`) fills
:class:`~realtime.display.state.DisplayState` and notifies the window (a queued signal) when a retrieval,
image, embedding or signal chunk arrived; the GUI thread then draws just that panel, painting it at once so
the recorded draw time is when its pixels were drawn. A timer refreshes the numbers, one part per tick.

Why it is built this way: the GUI thread holds the GIL while it paints (PySide6 does not release it), so
every millisecond it spends painting is a millisecond the bus thread cannot receive and a retrieval cannot
be drawn. So

- each piece of GUI work is short: a trace frame is a few ``drawPath`` calls on cached axes, a retrieval a
  few ``drawPixmap`` of thumbnails decoded beforehand, the numbers one table or plot at a time;
- work that can wait (trace frames, numbers, thumbnail decoding) is held back while a retrieval is due:
  its embedding has arrived, or (event-locked windows) its window is about to end;
- the screenshot, the longest piece of work (a repaint of the whole window), is taken right after a
  window's results are drawn.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pylsl
from PySide6 import QtCore, QtGui, QtWidgets

from brainstream.realtime.bus import DECODER_CONTROL_TOPIC
from brainstream.realtime.display.panels import (
    AccuracyPanel,
    GeneratedPanel,
    LatencyPanel,
    RetrievalPanel,
    TracePanel,
)
from brainstream.realtime.display.state import EMBEDDING_PREFIX, IMAGE, RETRIEVAL, DisplayState

logger = logging.getLogger(__name__)


class _Notifier(QtCore.QObject):
    """Carries "a retrieval / image / embedding / signal chunk arrived" from the bus to the GUI thread."""

    arrived = QtCore.Signal(str)


KEYS_HELP = (
    "Space pause · PgUp/PgDn page channels · T next stream · B mark sensors bad · S screenshot · F fullscreen"
    " · Q quit"
)

# Work that can wait (trace frames, numbers) is held back while a retrieval is due: from RETRIEVAL_LEAD_S
# before its window ends (event-locked windows, see DisplayState.retrieval_due) or from its embedding's
# arrival, until it is drawn, for RETRIEVAL_DUE_S at most (a lost retrieval must not freeze the traces).
# The lead covers a trace frame on a busy CPU (p90 ~15 ms on a loaded 2-core machine; ~3 ms when quiet).
RETRIEVAL_DUE_S = 0.06
RETRIEVAL_LEAD_S = 0.02


class DisplayWindow(QtWidgets.QMainWindow):
    """The live display.

    Parameters
    ----------
    state : DisplayState
        Filled by the bus thread; read here.
    fps : float
        Most trace frames per second (a frame is drawn when a signal chunk arrives, at most this often).
    page_size : int
        Channels per page of the traces panel.
    k : int
        Retrieved images shown.
    screenshot_dir : str | Path
        Where the S key writes ``brainstream-display-<time>.png``.
    gallery_dir : str | None
        Optional gallery folder (``images/<id>.png`` inside), to show the true image when not retrieved.
    endpoint : str
        Shown in the status bar.
    numbers_hz : float
        Refresh rate of the latency table, accuracy and status bar (and of a poll that catches anything a
        notification missed).
    """

    def __init__(
        self,
        state: DisplayState,
        fps: float = 30.0,
        page_size: int = 16,
        k: int = 5,
        screenshot_dir: str | Path = ".",
        gallery_dir: str | None = None,
        endpoint: str = "",
        numbers_hz: float = 4.0,
    ) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if numbers_hz <= 0:
            raise ValueError(f"numbers_hz must be > 0, got {numbers_hz}")
        self.state = state
        self.endpoint = endpoint
        self.screenshot_dir = Path(screenshot_dir)
        self.paused = False
        # where requests to other nodes go (run_display sets it to the bus thread's request); None: nowhere
        self.request_sink: Callable[..., None] | None = None
        self.setWindowTitle("brainstream · live display")
        self.resize(1600, 900)
        self.traces = TracePanel(page_size=page_size, seconds=state.signal_seconds, max_hz=fps)
        self._base_trace_interval = self.traces.min_interval
        self.retrieval = RetrievalPanel(k=k, gallery_dir=gallery_dir)
        self.generated = GeneratedPanel(seen_pixmap=self.retrieval.pixmap_of)
        self.latency = LatencyPanel()
        self.accuracy = AccuracyPanel()
        self._build_layout()
        self._status = QtWidgets.QLabel("")
        self.statusBar().addWidget(self._status, 1)
        self.statusBar().addPermanentWidget(QtWidgets.QLabel(KEYS_HELP))
        # The numbers (and a catch-all poll) on a timer; everything else is drawn as it arrives. All the
        # numbers at once took 5-20 ms (a table, two plots, rich-text labels): each tick refreshes one part,
        # so a retrieval arriving meanwhile waits for a small part at most.
        self._number_parts = [
            self._draw_table,
            self._draw_latency_plot,
            self._draw_status,
            self._draw_accuracy,
        ]
        self._next_part = 0
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, round(1000 / (numbers_hz * len(self._number_parts)))))
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        # a trace frame that arrived too early for the rate cap is drawn when the cap allows
        self._trace_timer = QtCore.QTimer(self)
        self._trace_timer.setSingleShot(True)
        self._trace_timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._trace_timer.timeout.connect(self._draw_traces)
        # the gallery's thumbnails are decoded in idle moments, a couple of ms at a time, not when shown
        self._to_warm = self.retrieval.gallery_thumbnails()
        self._warm_timer = QtCore.QTimer(self)
        self._warm_timer.setInterval(5)
        self._warm_timer.timeout.connect(self._warm_thumbnails)
        if self._to_warm:
            self._warm_timer.start()
        self._pending_shot: tuple[Path, str, Callable[[Path | None, str | None], None]] | None = None
        self._notifier = _Notifier(self)
        self._notifier.arrived.connect(self._on_arrived, QtCore.Qt.ConnectionType.QueuedConnection)
        self._listener = self._notifier.arrived.emit
        self.state.add_listener(self._listener)

    def _build_layout(self) -> None:
        central = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(central)
        grid.setContentsMargins(10, 10, 10, 4)
        grid.setSpacing(10)
        grid.addWidget(self.traces, 0, 0, 1, 2)
        grid.addWidget(self.latency, 0, 2, 1, 2)
        grid.addWidget(self.retrieval, 1, 0, 1, 2)
        grid.addWidget(self.generated, 1, 2)
        grid.addWidget(self.accuracy, 1, 3)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 3)
        grid.setColumnStretch(2, 2)
        grid.setColumnStretch(3, 2)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        self.setCentralWidget(central)

    # ------------------------------------------------------------------ drawing
    def redraw(self) -> None:
        """The timer's tick: one part of the numbers, and anything new no notification brought."""
        try:
            if not self.paused:
                self._draw_and_record(RETRIEVAL, self.retrieval)
                self._draw_and_record(IMAGE, self.generated)
                self._draw_traces()
            if self._retrieval_due():
                return  # a retrieval is due within milliseconds: the numbers can wait for the next tick
            part = self._number_parts[self._next_part]
            self._next_part = (self._next_part + 1) % len(self._number_parts)
            t0 = time.perf_counter()
            for widget in part():
                widget.repaint()  # now, not at some later pass where it could sit unmeasured
            self.state.record_work("numbers", (time.perf_counter() - t0) * 1e3)
        except Exception:  # a frame must never take the display down; log and draw the next one
            logger.exception("display frame failed")

    def _retrieval_due(self) -> bool:
        """Draw a retrieval that is waiting, if any; True while one is due (see ``RETRIEVAL_DUE_S``)."""
        if not self.paused:
            self._draw_and_record(RETRIEVAL, self.retrieval)
        return self.state.retrieval_due(RETRIEVAL_DUE_S, RETRIEVAL_LEAD_S)

    def _on_arrived(self, topic: str) -> None:
        if self.paused:
            return
        try:
            if topic == RETRIEVAL:
                self._draw_and_record(RETRIEVAL, self.retrieval)
            elif topic == IMAGE:
                self._draw_and_record(IMAGE, self.generated)
            elif not topic.startswith(EMBEDDING_PREFIX):  # an embedding only announces its retrieval
                self._draw_traces()
        except Exception:
            logger.exception("drawing a new %s failed", topic)

    def _draw_traces(self) -> None:
        """Draw a trace frame if the stream moved on and the rate cap allows, else schedule one."""
        if self.paused:
            return
        now = time.monotonic()
        wait = self.traces.min_interval - (now - self.traces.t_drawn)
        if wait <= 0 and self._retrieval_due():
            wait = 0.003  # a retrieval comes within milliseconds: no trace frame in front of it
        if wait > 0:
            if not self._trace_timer.isActive():
                self._trace_timer.start(max(1, math.ceil(wait * 1000)))
            return
        t0 = time.perf_counter()
        if not self.traces.update_from(self.state, now):
            return
        self.traces.plot.viewport().repaint()  # paint now, so the frame's cost is measured
        cost = time.perf_counter() - t0
        self.state.record_work("traces", cost * 1e3)
        self.state.record_frame()
        # On a starved CPU frames get slow; leave at least a third of the time idle (fewer frames, fresh
        # data, and the GIL free for the bus thread).
        self.traces.min_interval = min(0.25, max(self._base_trace_interval, 1.5 * cost))

    def _warm_thumbnails(self, slice_s: float = 0.002) -> None:
        if self._retrieval_due():
            return
        t_end = time.perf_counter() + slice_s
        while self._to_warm and time.perf_counter() < t_end:
            self.retrieval.cache.warm(self._to_warm.pop())
        if not self._to_warm:
            self._warm_timer.stop()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt API)
        self.state.remove_listener(self._listener)
        self.timer.stop()
        self._trace_timer.stop()
        self._warm_timer.stop()
        super().closeEvent(event)

    def _draw_and_record(self, topic: str, panel: RetrievalPanel | GeneratedPanel) -> None:
        latest = self.state.latest(topic)
        if latest is None or latest.drawn:
            return
        t_started = pylsl.local_clock()
        t0 = time.perf_counter()
        if not panel.update_from(latest):
            return
        # paint now, synchronously, so the recorded time is when the pixels were drawn, not when queued
        panel.paint_now()
        self.state.record_draw(topic, latest, pylsl.local_clock(), t_started)
        self.state.record_work(topic, (time.perf_counter() - t0) * 1e3)
        if self._pending_shot is not None and self._pending_shot[1] == topic:
            self._take_pending_shot()

    def _draw_table(self) -> list[QtWidgets.QWidget]:
        return self.latency.update_table(self.state, self.state.latency_window_s)

    def _draw_latency_plot(self) -> list[QtWidgets.QWidget]:
        return self.latency.update_plot(self.state)

    def _draw_status(self) -> list[QtWidgets.QWidget]:
        bus_state, _ = self.state.bus_state()
        n_msgs = sum(c["received"] for c in self.state.counts().values())
        paused = "  ·  ⏸ PAUSED" if self.paused else ""
        self._status.setText(
            f"bus {self.endpoint or 'default'} ({bus_state}) · {n_msgs} messages · "
            f"{self.state.fps():.0f} fps{paused}"
        )
        return [self._status, *self.latency.update_status(self.state)]

    def _draw_accuracy(self) -> list[QtWidgets.QWidget]:
        changed = self.accuracy.update_from(self.state, self._gallery_size())
        return self.accuracy.changed_widgets() if changed else []

    def _draw_numbers(self) -> None:
        """All the numbers at once, painted now (for a screenshot or a key press)."""
        for part in self._number_parts:
            for widget in part():
                widget.repaint()

    def _gallery_size(self) -> int | None:
        for node in self.state.node_statuses():
            for key in ("gallery_size", "n_gallery"):
                value = node.stats.get(key)
                if isinstance(value, int | float) and value > 0:
                    return int(value)
        return None

    # ------------------------------------------------------------------ user actions
    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.state.set_display_state("paused" if paused else "running")
        self.redraw()  # resuming shows what arrived meanwhile at once

    def screenshot_soon(
        self,
        path: str | Path,
        done: Callable[[Path | None, str | None], None],
        max_wait_s: float = 3.0,
    ) -> None:
        """Take a screenshot right after the next window's results are drawn (at most ``max_wait_s`` later).

        A grab repaints the whole window (50-100 ms of GUI thread and GIL): taken right after a window's
        image (or retrieval, without a generator) it falls in the quiet time before the next window instead
        of in front of a retrieval. ``done(path, None)`` or ``done(None, error)`` is called afterwards.
        """
        kind = IMAGE if self.state.counts().get(IMAGE, {}).get("drawn") else RETRIEVAL
        pending = (Path(path), kind, done)
        self._pending_shot = pending
        QtCore.QTimer.singleShot(
            max(0, round(max_wait_s * 1000)), lambda: self._take_pending_shot(only=pending)
        )

    def _take_pending_shot(self, only: tuple | None = None) -> None:
        if self._pending_shot is None or (only is not None and self._pending_shot is not only):
            return  # taken already (or a newer request is pending, with its own deadline)
        pending, self._pending_shot = self._pending_shot, None
        path, kind, done = pending
        t0 = time.perf_counter()
        try:
            written = self.screenshot(path)
        except OSError as exc:
            logger.error("%s", exc)
            done(None, str(exc))
            return
        self.state.record_work("screenshot", (time.perf_counter() - t0) * 1e3)
        done(written, None)

    def screenshot(self, path: str | Path | None = None) -> Path:
        """Write the window as PNG (works offscreen too); returns the path."""
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = self.screenshot_dir / f"brainstream-display-{stamp}.png"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._draw_numbers()
        if not self.grab().save(os.fspath(path), "PNG"):
            raise OSError(f"could not write screenshot {path}; check the folder is writable")
        logger.info("screenshot written to %s", path)
        self.statusBar().showMessage(f"screenshot written to {path}", 3000)
        return path

    def ask_bad_sensors(self) -> None:
        """Ask which sensors to leave out (names separated by spaces or commas) and tell the decoder."""
        text, ok = QtWidgets.QInputDialog.getText(
            self, "Mark sensors bad", "Sensors the decoder should leave out (e.g. MLT41-1609 MRO22-1609):"
        )
        names = [n for n in text.replace(",", " ").split() if n]
        if ok and names:
            self.mark_bad(names)

    def mark_bad(self, names: list[str]) -> bool:
        """Ask the decoder to mask / interpolate ``names`` from now on; False when the display cannot send."""
        if self.request_sink is None:
            self.statusBar().showMessage("cannot mark sensors bad: the display publishes nothing", 5000)
            return False
        self.request_sink(DECODER_CONTROL_TOPIC, action="mark_bad", channels=list(names))
        logger.info("asked the decoder to leave out %s", ", ".join(names))
        self.statusBar().showMessage(f"asked the decoder to leave out {', '.join(names)}", 5000)
        return True

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key = event.key()
        keys = QtCore.Qt.Key
        if key == keys.Key_Space:
            self.set_paused(not self.paused)
        elif key in (keys.Key_PageDown, keys.Key_Down, keys.Key_Right):
            self.traces.page_by(+1)
            self._draw_traces()
        elif key in (keys.Key_PageUp, keys.Key_Up, keys.Key_Left):
            self.traces.page_by(-1)
            self._draw_traces()
        elif key == keys.Key_T:
            self.traces.next_stream()
            self._draw_traces()
        elif key == keys.Key_S:
            self.screenshot()
        elif key == keys.Key_B:
            self.ask_bad_sensors()
        elif key == keys.Key_F:
            self.showNormal() if self.isFullScreen() else self.showFullScreen()
        elif key in (keys.Key_Q, keys.Key_Escape):
            self.close()
        else:
            super().keyPressEvent(event)
