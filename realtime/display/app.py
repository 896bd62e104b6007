"""Wire state, bus thread and window together: :func:`run_display` (what ``brainstream display`` runs)."""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

from brainstream.realtime.display.state import DisplayState
from brainstream.realtime.heap import freeze_startup_heap

logger = logging.getLogger(__name__)


def has_screen() -> bool:
    """Whether Qt can open a window here: a display server, or a platform plugin that needs none."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb") and not platform.startswith("wayland"):
        return True  # offscreen, minimal, eglfs, ... need no X / Wayland server
    return sys.platform in ("win32", "darwin") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


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
    fps: float = 30.0,
    keys: str | None = None,
    clock_offsets: bool = False,
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
    page_size : int
        Channels per page of the traces.
    latency_window_s : float
        Seconds of the rolling latency statistics.
    gallery_dir : str | None
        Gallery folder, to show the true image when it was not retrieved.
    fps : float
        Most trace frames per second.
    keys : str | None
        CURVE keys folder when the broker runs on another host (``brainstream keys``).
    clock_offsets : bool
        Measure the other hosts' LSL clock offsets (their ``brainstream live`` clock beacons) and read
        their stamps in this host's clock; without, latencies across hosts are not shown.

    Notes
    -----
    The screenshot is taken right after the first retrieval (or image) drawn ``after`` seconds from the
    start, or ``after`` + 3 s without one, so that grabbing the window never delays a retrieval.
    """
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if screenshot is not None and after < 0:
        raise ValueError(f"after must be >= 0 seconds, got {after}")
    from PySide6 import QtCore, QtWidgets

    from brainstream.realtime.display.bus_thread import BusThread
    from brainstream.realtime.display.panels import apply_dark_theme
    from brainstream.realtime.display.window import DisplayWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    apply_dark_theme(app)
    clocks = None
    if clock_offsets:
        from brainstream.realtime.session.clocks import HostClocks

        clocks = HostClocks().start()
    state = DisplayState(latency_window_s=latency_window_s, clocks=clocks)
    bus = BusThread(state, endpoint=endpoint, publish_endpoint=publish_endpoint, keys=keys)
    window = DisplayWindow(
        state, fps=fps, page_size=page_size, gallery_dir=gallery_dir, endpoint=bus.endpoint
    )
    window.request_sink = bus.request
    result: dict[str, Any] = {"screenshot": None}

    def screenshot_taken(path: Path | None, error: str | None) -> None:
        if path is not None:
            result["screenshot"] = os.fspath(path)
        else:
            result["screenshot_error"] = error
        if seconds is None:
            window.close()

    def take_screenshot() -> None:
        # not in front of a retrieval: right after the next window's results are drawn (a few s at most)
        window.screenshot_soon(screenshot, screenshot_taken)

    restore = _close_on_signals(window)
    # The GUI thread holds the GIL while it paints; when it runs Python, a bus thread woken by a message
    # waits for the interpreter's switch interval (5 ms by default) before it may read it. 1 ms instead.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, 0.001))
    freeze_startup_heap()  # Qt, pyqtgraph, numpy: a full collection would stall a frame ~100 ms
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
        if clocks is not None:
            clocks.stop()
        restore()
        sys.setswitchinterval(switch_interval)
        gc.unfreeze()
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
        # the numbers timer and the bus notifications run Python often, so this runs within ~0.25 s
        logger.info("signal %d: closing the display", signum)
        QtCore.QTimer.singleShot(0, window.close)

    previous = {sig: signal.signal(sig, close) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
