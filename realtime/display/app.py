"""Wire state, bus thread and window together: :func:`run_display` (what ``brainstream display`` runs)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from realtime.display.state import DisplayState

logger = logging.getLogger(__name__)


def run_display(
    endpoint: str | None = None,
    *,
    publish_endpoint: str | None = None,
    seconds: float | None = None,
    screenshot: str | Path | None = None,
    after: float = 5.0,
    fullscreen: bool = False,
    page_size: int = 16,
    latency_window_s: float = 10.0,
    gallery_dir: str | None = None,
    fps: float = 60.0,
) -> dict[str, Any]:
    """Open the live display and block until it closes; returns the summary (see ``DisplayState.summary``).

    Must be called from the main thread (Qt's rule). With ``QT_QPA_PLATFORM=offscreen`` nothing is shown
    and screenshots still work.

    Parameters
    ----------
    endpoint : str | None
        Bus subscriber endpoint (broker XPUB); None = the default ``tcp://127.0.0.1:5702``.
    publish_endpoint : str | None
        Where ``status.display`` goes (broker XSUB); None = default, ``""`` = publish nothing.
    seconds : float | None
        Close after this many seconds (None: when the user closes the window, or right after
        ``screenshot`` when that is given).
    screenshot : path | None
        Write a PNG of the window ``after`` seconds after start.
    after : float
        Seconds before the screenshot.
    fullscreen : bool
        Open full screen.
    """
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if screenshot is not None and after < 0:
        raise ValueError(f"after must be >= 0 seconds, got {after}")
    from PySide6 import QtCore, QtWidgets

    from realtime.display.bus_thread import BusThread
    from realtime.display.panels import apply_dark_theme
    from realtime.display.window import DisplayWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    apply_dark_theme(app)
    state = DisplayState(latency_window_s=latency_window_s)
    bus = BusThread(state, endpoint=endpoint, publish_endpoint=publish_endpoint)
    window = DisplayWindow(
        state, fps=fps, page_size=page_size, gallery_dir=gallery_dir, endpoint=bus.endpoint
    )
    result: dict[str, Any] = {"screenshot": None}

    def take_screenshot() -> None:
        try:
            result["screenshot"] = os.fspath(window.screenshot(screenshot))
        except OSError as exc:
            result["screenshot_error"] = str(exc)
            logger.error("%s", exc)
        if seconds is None:
            window.close()

    restore = _close_on_signals(window)
    bus.start()
    try:
        window.showFullScreen() if fullscreen else window.show()
        if screenshot is not None:
            QtCore.QTimer.singleShot(int(after * 1000), take_screenshot)
        if seconds is not None:
            QtCore.QTimer.singleShot(int(seconds * 1000), window.close)
        closed = QtCore.QEventLoop()
        window.destroyed.connect(closed.quit)
        window.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose, True)
        closed.exec()
        summary = state.summary()  # before the bus thread stops, so its alarms describe the session
        summary["draw_records"] = state.draw_records()
    finally:
        bus.stop()
        restore()
    summary.update(result)
    return summary


def _close_on_signals(window: Any) -> Any:
    """SIGINT / SIGTERM close the window cleanly (so the summary is still returned); returns an undo."""
    import signal
    import threading

    from PySide6 import QtCore

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def close(signum: int, frame: Any) -> None:
        # the 60 fps redraw timer runs Python often, so this handler runs within a frame of the signal
        logger.info("signal %d: closing the display", signum)
        QtCore.QTimer.singleShot(0, window.close)

    previous = {sig: signal.signal(sig, close) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
