"""The display's main window: panels laid out on one screen, a 60 fps redraw timer, keys, screenshots.

The timer only reads :class:`~realtime.display.state.DisplayState` snapshots; the bus is read by
:class:`~realtime.display.bus_thread.BusThread`, so a silent, slow or dead bus never delays a frame.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pylsl
from PySide6 import QtCore, QtGui, QtWidgets

from realtime.display.panels import (
    AccuracyPanel,
    GeneratedPanel,
    LatencyPanel,
    RetrievalPanel,
    TracePanel,
)
from realtime.display.state import IMAGE, RETRIEVAL, DisplayState

logger = logging.getLogger(__name__)


class _Notifier(QtCore.QObject):
    """Carries "a new retrieval / image arrived" from the bus thread to the GUI thread (queued signal)."""

    arrived = QtCore.Signal(str)


KEYS_HELP = "Space pause · PgUp/PgDn page channels · T next stream · S screenshot · F fullscreen · Q quit"


class DisplayWindow(QtWidgets.QMainWindow):
    """The live display.

    Parameters
    ----------
    state : DisplayState
        Filled by the bus thread; read here.
    fps : float
        Target redraw rate of the traces and images (numbers refresh at ``numbers_hz``).
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
    """

    def __init__(
        self,
        state: DisplayState,
        fps: float = 60.0,
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
        self.state = state
        self.endpoint = endpoint
        self.screenshot_dir = Path(screenshot_dir)
        self.paused = False
        self.setWindowTitle("brainstream · live display")
        self.resize(1600, 900)
        self.traces = TracePanel(page_size=page_size, seconds=state.signal_seconds)
        self.retrieval = RetrievalPanel(k=k, gallery_dir=gallery_dir)
        self.generated = GeneratedPanel()
        self.latency = LatencyPanel()
        self.accuracy = AccuracyPanel()
        self._build_layout()
        self._status = QtWidgets.QLabel("")
        self.statusBar().addWidget(self._status, 1)
        self.statusBar().addPermanentWidget(QtWidgets.QLabel(KEYS_HELP))
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._base_interval_ms = max(1, round(1000 / fps))
        self.timer.setInterval(self._base_interval_ms)
        self.timer.timeout.connect(self.redraw)
        self._numbers_every = 1.0 / numbers_hz
        self._t_numbers = 0.0
        self.timer.start()
        # draw a new retrieval / image as soon as the GUI thread is free, not at the next paced frame
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

    # ------------------------------------------------------------------ frame
    def redraw(self) -> None:
        """One frame: draw what changed since the last one; never blocks on the bus."""
        t0 = time.perf_counter()
        try:
            if not self.paused:
                if self.traces.update_from(self.state):
                    self.traces.plot.viewport().repaint()  # paint now, so the frame's cost is measured
                self._draw_and_record(RETRIEVAL, self.retrieval)
                self._draw_and_record(IMAGE, self.generated)
            now = time.monotonic()
            if now - self._t_numbers >= self._numbers_every:
                self._t_numbers = now
                self._draw_numbers()
            self.state.record_frame()
        except Exception:  # a frame must never take the display down; log and draw the next one
            logger.exception("display frame failed")
        self._pace(time.perf_counter() - t0)

    def _pace(self, cost_s: float) -> None:
        # Painting holds the GIL; on a starved CPU frames get slow and a fixed 60 fps timer would starve the
        # bus thread until messages queue up. Leave a third of the time idle: fewer frames, fresh data.
        interval = min(250, max(self._base_interval_ms, round(1500 * cost_s)))
        if abs(interval - self.timer.interval()) > 2:
            self.timer.setInterval(interval)

    def _on_arrived(self, topic: str) -> None:
        if self.paused:
            return
        try:
            self._draw_and_record(topic, self.retrieval if topic == RETRIEVAL else self.generated)
        except Exception:
            logger.exception("drawing a new %s failed", topic)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt API)
        self.state.remove_listener(self._listener)
        self.timer.stop()
        super().closeEvent(event)

    def _draw_and_record(self, topic: str, panel: RetrievalPanel | GeneratedPanel) -> None:
        latest = self.state.latest(topic)
        if latest is None or not panel.update_from(latest):
            return
        # paint now, synchronously, so the recorded time is when the pixels were drawn, not when queued
        panel.repaint()
        self.state.record_draw(topic, latest, pylsl.local_clock())

    def _draw_numbers(self) -> None:
        self.latency.update_from(self.state, self.state.latency_window_s)
        self.accuracy.update_from(self.state, self._gallery_size())
        bus_state, stats = self.state.bus_state()
        n_msgs = sum(c["received"] for c in self.state.counts().values())
        paused = "  ·  ⏸ PAUSED" if self.paused else ""
        self._status.setText(
            f"bus {self.endpoint or 'default'} ({bus_state}) · {n_msgs} messages · "
            f"{self.state.fps():.0f} fps{paused}"
        )

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
        self._draw_numbers()

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

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key = event.key()
        keys = QtCore.Qt.Key
        if key == keys.Key_Space:
            self.set_paused(not self.paused)
        elif key in (keys.Key_PageDown, keys.Key_Down, keys.Key_Right):
            self.traces.page_by(+1)
        elif key in (keys.Key_PageUp, keys.Key_Up, keys.Key_Left):
            self.traces.page_by(-1)
        elif key == keys.Key_T:
            self.traces.next_stream()
        elif key == keys.Key_S:
            self.screenshot()
        elif key == keys.Key_F:
            self.showNormal() if self.isFullScreen() else self.showFullScreen()
        elif key in (keys.Key_Q, keys.Key_Escape):
            self.close()
        else:
            super().keyPressEvent(event)
