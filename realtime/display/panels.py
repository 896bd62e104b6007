"""The display's panels (PySide6 + pyqtgraph), each fed from a :class:`~realtime.display.state.DisplayState`.

Panels never touch the bus: the window hands them snapshots. Each ``update_from`` returns quickly and only
rebuilds what changed; the panels the window draws on arrival (traces, retrieval, generated image) paint
in a few milliseconds, because the GUI thread holds the GIL while it paints and a retrieval waits for it.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from brainstream.realtime.display.state import STAGE_RECEIVED, DisplayState, LatestMessage, SignalView

# a restrained dark palette (GitHub-dark-like) so images and traces carry the colour
COLORS = {
    "window": "#0d1117",
    "panel": "#161b22",
    "border": "#30363d",
    "text": "#e6edf3",
    "muted": "#8b949e",
    "accent": "#58a6ff",
    "ok": "#3fb950",
    "warn": "#d29922",
    "bad": "#f85149",
    "marker": "#e3b341",
}
TRACE_COLORS = ["#79c0ff", "#56d4dd", "#a5d6ff", "#7ee787", "#d2a8ff", "#ffa198"]
MONO = "DejaVu Sans Mono"


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Fusion style with a dark palette, and pyqtgraph's defaults to match."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    roles = {
        QtGui.QPalette.ColorRole.Window: COLORS["window"],
        QtGui.QPalette.ColorRole.WindowText: COLORS["text"],
        QtGui.QPalette.ColorRole.Base: COLORS["panel"],
        QtGui.QPalette.ColorRole.AlternateBase: "#1c2129",
        QtGui.QPalette.ColorRole.Text: COLORS["text"],
        QtGui.QPalette.ColorRole.Button: COLORS["panel"],
        QtGui.QPalette.ColorRole.ButtonText: COLORS["text"],
        QtGui.QPalette.ColorRole.Highlight: COLORS["accent"],
        QtGui.QPalette.ColorRole.ToolTipBase: COLORS["panel"],
        QtGui.QPalette.ColorRole.ToolTipText: COLORS["text"],
    }
    for role, color in roles.items():
        pal.setColor(role, QtGui.QColor(color))
    app.setPalette(pal)
    app.setStyleSheet(
        f"QFrame#panel {{ background: {COLORS['panel']}; border: 1px solid {COLORS['border']};"
        f" border-radius: 6px; }}"
        f" QLabel#title {{ color: {COLORS['muted']}; font-weight: bold; letter-spacing: 1px; }}"
        f" QLabel {{ color: {COLORS['text']}; background: transparent; border: none; }}"
        f" QTableWidget {{ background: {COLORS['panel']}; border: none; gridline-color: {COLORS['border']};"
        f" font-family: '{MONO}'; }}"
        f" QHeaderView::section {{ background: {COLORS['panel']}; color: {COLORS['muted']}; border: none;"
        f" border-bottom: 1px solid {COLORS['border']}; padding: 2px 6px; }}"
        f" QStatusBar {{ color: {COLORS['muted']}; }}"
    )
    pg.setConfigOptions(background=COLORS["panel"], foreground=COLORS["muted"], antialias=False)


class Panel(QtWidgets.QFrame):
    """A titled card; subclasses put their content in ``self.body``."""

    def __init__(self, title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("panel")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 10)
        layout.setSpacing(6)
        header = QtWidgets.QHBoxLayout()
        self.title = QtWidgets.QLabel(title.upper())
        self.title.setObjectName("title")
        self.subtitle = QtWidgets.QLabel("")
        self.subtitle.setStyleSheet(f"color: {COLORS['muted']};")
        self.subtitle.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.subtitle)
        layout.addLayout(header)
        self.body = QtWidgets.QVBoxLayout()
        self.body.setSpacing(6)
        layout.addLayout(self.body, 1)


def tune_plot(plot: pg.PlotWidget) -> None:
    """Make ``plot`` cheap to repaint; its owner must repaint ``plot.viewport()`` after each change.

    - The axes are blitted from a pixmap, re-rendered only when their ticks change: pyqtgraph otherwise
      replays each axis's drawing (tick labels, grid lines) on every repaint, ~1-2 ms per axis, most of a
      trace frame.
    - The view no longer schedules a repaint of its own when the scene changes: the owner repaints at
      once (so the time is measured and nothing is drawn later in front of a retrieval), and a scheduled
      repaint on top of that painted every frame twice.
    """
    for name in ("left", "bottom"):
        plot.getAxis(name).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
    plot.setViewportUpdateMode(QtWidgets.QGraphicsView.ViewportUpdateMode.NoViewportUpdate)


# ---------------------------------------------------------------------- signal traces
def peak_decimate(
    x: np.ndarray, lanes: np.ndarray, connect: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep each bin's min and max (2 points per bin): what a line at one sample per pixel would show.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Increasing sample positions.
    lanes : ndarray, shape (n_lanes, n)
        Values to decimate along their last axis.
    connect : ndarray of bool, shape (n,)
        ``connect[j]``: sample j joins sample j + 1 (False at a gap in the stream).
    n_bins : int
        Bins (pixels) to keep; nothing changes when ``n <= 2 * n_bins``.

    Returns
    -------
    x, lanes, connect : ndarray
        Shapes ``(2 * n_bins,)``, ``(n_lanes, 2 * n_bins)`` and ``(2 * n_bins,)`` (or the inputs unchanged);
        a bin that holds a gap does not join the next one.
    """
    n = x.size
    if n_bins < 1 or n <= 2 * n_bins:
        return x, lanes, connect
    per = n // n_bins
    skip = n - per * n_bins  # the oldest samples that do not fill a bin (off the left edge soon anyway)
    binned = lanes[:, skip:].reshape(lanes.shape[0], n_bins, per)
    out = np.empty((lanes.shape[0], n_bins, 2), lanes.dtype)
    out[..., 0] = binned.min(axis=2)
    out[..., 1] = binned.max(axis=2)
    xs = np.repeat(x[skip:].reshape(n_bins, per)[:, per // 2], 2)
    joined = np.ones((n_bins, 2), dtype=bool)
    joined[:, 1] = np.asarray(connect[skip:], dtype=bool).reshape(n_bins, per).all(axis=1)
    return xs, out.reshape(lanes.shape[0], 2 * n_bins), joined.ravel()


class TraceItem(pg.GraphicsObject):
    """Every lane, the marker lines and their labels of the traces panel as one item, painted in one call.

    A frame used to cost ~16 ``PlotDataItem.setData`` calls plus ~20 ``TextItem`` moves (10-25 ms on a busy
    CPU, every 50 ms, holding the GIL the bus thread needs): here the lanes become one
    :class:`QtGui.QPainterPath` per colour, built with numpy, and the labels are plain ``drawText`` calls.

    Parameters
    ----------
    colors : list of str
        Lane ``i`` is drawn in ``colors[i % len(colors)]``.
    seconds, n_lanes : float, int
        Visible span, for the bounding rectangle.
    """

    def __init__(self, colors: list[str], seconds: float, n_lanes: int) -> None:
        super().__init__()
        self._pens = [pg.mkPen(c, width=1) for c in colors]
        self._marker_pen = pg.mkPen(COLORS["marker"], width=1, style=QtCore.Qt.PenStyle.DashLine)
        self._label_color = QtGui.QColor(COLORS["marker"])
        self._label_fill = QtGui.QColor(13, 17, 23, 200)
        self._font = QtGui.QFont(MONO, 8)
        self._metrics = QtGui.QFontMetrics(self._font)
        self._paths: list[tuple[QtGui.QPen, QtGui.QPainterPath]] = []
        self._marker_path = QtGui.QPainterPath()
        self.labels: list[tuple[float, float, str]] = []  # (x, y) in data coordinates, text
        # generous and fixed: lanes may overshoot their band; the view box clips what is outside the view
        self._rect = QtCore.QRectF(-1.5 * seconds, -n_lanes - 2.0, 2.0 * seconds, n_lanes + 4.0)

    def set_lanes(self, x: np.ndarray, lanes: np.ndarray, connect: np.ndarray) -> None:
        """Lane ``i`` is ``lanes[i]`` (already offset to its band) at ``x``; ``connect[j]`` joins j to j+1."""
        n_lanes, n = lanes.shape
        paths = []
        if n >= 2:
            conn = np.asarray(connect, dtype=bool).copy()
            conn[-1] = False  # the last point of a lane does not join the first of the next
            for g, pen in enumerate(self._pens):
                rows = lanes[g :: len(self._pens)]
                if not len(rows):
                    continue
                xs = np.tile(x, len(rows))
                path = pg.arrayToQPath(xs, rows.ravel(), connect=np.tile(conn, len(rows)))
                paths.append((pen, path))
        self._paths = paths

    def set_markers(
        self, xs: list[float], top: float, bottom: float, labels: list[tuple[float, float, str]]
    ) -> None:
        """Dashed vertical lines at ``xs`` from ``top`` to ``bottom``; ``labels`` hang at ``(x, y)``."""
        path = QtGui.QPainterPath()
        for x in xs:
            path.moveTo(x, top)
            path.lineTo(x, bottom)
        self._marker_path = path
        self.labels = labels

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt API)
        return self._rect

    def paint(self, p: QtGui.QPainter, *args: Any) -> None:
        for pen, path in self._paths:
            p.setPen(pen)
            p.drawPath(path)
        if not self.labels and self._marker_path.isEmpty():
            return
        p.setPen(self._marker_pen)
        p.drawPath(self._marker_path)
        # labels keep their pixel size whatever the scale of the view: draw them in device coordinates
        to_device = p.transform()
        p.resetTransform()
        p.setFont(self._font)
        p.setPen(self._label_color)
        h = self._metrics.height()
        for x, y, text in self.labels:
            anchor = to_device.map(QtCore.QPointF(x, y))
            w = self._metrics.horizontalAdvance(text) + 4
            box = QtCore.QRectF(anchor.x() - w / 2, anchor.y(), w, h)
            p.fillRect(box, self._label_fill)
            p.drawText(box, QtCore.Qt.AlignmentFlag.AlignCenter, text)
        p.setTransform(to_device)


class TracePanel(Panel):
    """Scrolling multichannel traces of one ``signal.<stream>`` preview, paged, with marker lines.

    Parameters
    ----------
    page_size : int
        Channels per page.
    seconds : float
        Visible span.
    max_labels : int
        Most marker labels drawn at once.
    max_hz : float
        Most redraws per second, however often the preview arrives (each redraw repaints the plot).
    """

    def __init__(
        self, page_size: int = 16, seconds: float = 10.0, max_labels: int = 24, max_hz: float = 25.0
    ) -> None:
        super().__init__("Signal")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        if max_hz <= 0:
            raise ValueError(f"max_hz must be > 0, got {max_hz}")
        self.page_size = page_size
        self.seconds = seconds
        self.max_labels = max_labels
        self.min_interval = 1.0 / max_hz
        self.page = 0
        self.stream_index = 0
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=False, alpha=0.15)
        self.plot.setLabel("bottom", "time relative to newest sample (s)")
        self.plot.setXRange(-seconds, 0, padding=0.01)
        self.plot.setYRange(-page_size + 0.5, 0.5, padding=0)
        self.plot.getAxis("left").setWidth(92)
        self.plot.getAxis("left").setStyle(tickFont=QtGui.QFont(MONO, 8))
        self.plot.getAxis("left").setTicks([[], []])  # channel names once a stream arrives
        tune_plot(self.plot)
        self.body.addWidget(self.plot, 1)
        self.item = TraceItem(TRACE_COLORS, seconds, page_size)
        self.plot.addItem(self.item, ignoreBounds=True)
        self.placeholder = pg.TextItem(
            "waiting for signal.* on the bus…", color=COLORS["muted"], anchor=(0.5, 0.5)
        )
        self.placeholder.setPos(-seconds / 2, -page_size / 2)
        self.plot.addItem(self.placeholder)
        self._drawn_version: tuple[Any, ...] = ()
        self._ticks: list[tuple[int, str]] | None = None
        self.t_drawn = -math.inf
        self.n_channels = 0

    def page_by(self, delta: int) -> None:
        n_pages = max(1, math.ceil(self.n_channels / self.page_size))
        self.page = (self.page + delta) % n_pages
        self._drawn_version = ()
        self.t_drawn = -math.inf

    def next_stream(self) -> None:
        self.stream_index += 1
        self._drawn_version = ()
        self.t_drawn = -math.inf

    def due(self, now: float) -> bool:
        """Whether a redraw is allowed at ``now`` (monotonic seconds) under ``max_hz``."""
        return now - self.t_drawn >= self.min_interval

    def visible_labels(self) -> list[str]:
        """The marker labels drawn in the last frame, newest first."""
        return [text for _, _, text in self.item.labels]

    def update_from(self, state: DisplayState, now: float | None = None) -> bool:
        """Redraw from ``state`` if something changed and ``max_hz`` allows; True when there is a new frame.

        The caller repaints ``self.plot.viewport()`` (now, to measure it, or later).
        """
        now = time.monotonic() if now is None else now
        if not self.due(now):
            return False
        streams = state.signal_streams()
        if not streams:
            return False
        stream = streams[self.stream_index % len(streams)]
        version = state.signal_version(stream)
        n_markers, last_marker = state.marker_version()
        key = (stream, version, n_markers, last_marker, self.page)
        if version is None or key == self._drawn_version:
            return False
        view = state.signal_view(stream)
        if view is None or view.timestamps.size < 2:
            return False
        self._drawn_version = key
        self.t_drawn = now
        self._draw(view, state.markers(), len(streams))
        return True

    def _draw(self, view: SignalView, markers: list[tuple[float, str, str, int]], n_streams: int) -> None:
        self.placeholder.setVisible(False)
        self.n_channels = len(view.ch_names)
        n_pages = max(1, math.ceil(self.n_channels / self.page_size))
        self.page %= n_pages
        first = self.page * self.page_size
        last = min(first + self.page_size, self.n_channels)
        t_newest = float(view.timestamps[-1])
        x = view.timestamps - t_newest
        start = int(np.searchsorted(x, -self.seconds))  # timestamps are in order: a slice, not a mask
        x = x[start:]
        data = view.data[first:last, start:]
        # auto-scale each channel into its lane: robust centre and spread of what is on screen
        lo, centre, hi = np.percentile(data, [1, 50, 99], axis=1, keepdims=True)
        spread = np.maximum(hi - lo, 1e-12 + 1e-6 * np.abs(centre))
        lanes = (data - centre) * (0.8 / spread) - np.arange(last - first, dtype=np.float32)[:, None]
        # do not draw a line across a gap in the stream (an outage, a restart)
        connect = np.append(np.diff(view.timestamps[start:]) < 2.5 / view.sfreq, False)
        x, lanes, connect = peak_decimate(x, lanes, connect, int(self.plot.getViewBox().width()))
        self.item.set_lanes(x, lanes, connect)
        ticks = [(-i, view.ch_names[first + i]) for i in range(last - first)]
        if ticks != self._ticks:  # setTicks re-renders the axis: only when the channels change
            self._ticks = ticks
            self.plot.getAxis("left").setTicks([ticks, []])
        self._draw_markers(
            [(t - t_newest, label, n) for t, _, label, n in markers if t - t_newest >= -self.seconds],
            last - first,
        )
        stream_txt = f"{view.stream}" + (
            f" ({self.stream_index % n_streams + 1}/{n_streams}, T: next)" if n_streams > 1 else ""
        )
        self.title.setText(f"SIGNAL · {stream_txt}")
        self.subtitle.setText(
            f"ch {first + 1}–{last} of {self.n_channels} · page {self.page + 1}/{n_pages}"
            f" (PgUp/PgDn) · {view.sfreq:g} Hz preview · auto-scaled"
        )

    def _draw_markers(self, visible: list[tuple[float, str, int]], n_lanes: int) -> None:
        top, bottom = 0.5, -max(n_lanes, 1) + 0.5
        # label newest first, on two alternating rows, skipping labels that would overlap the last one
        min_gap = 0.09 * self.seconds
        last_x = {0: math.inf, 1: math.inf}
        shown = []
        for x, label, n in reversed(visible):
            row = n % 2
            if last_x[row] - x >= min_gap and len(shown) < self.max_labels:
                shown.append((x, top - 0.02 - 0.7 * row, label))
                last_x[row] = x
        self.item.set_markers([x for x, _, _ in visible], top, bottom, shown)


# ---------------------------------------------------------------------- images
class PixmapCache:
    """Bounded LRU cache of thumbnails loaded from image files (a placeholder when a file is missing).

    Keys are absolute paths, so a gallery named relative to another working folder still hits.
    """

    def __init__(self, size: int = 128, capacity: int = 256) -> None:
        self.size = size
        self.capacity = capacity
        self._items: OrderedDict[str, QtGui.QPixmap] = OrderedDict()
        self.misses = 0

    def get(self, path: str | None, label: str = "") -> QtGui.QPixmap:
        key = os.path.abspath(path) if path else f"<missing:{label}>"
        pix = self._items.get(key)
        if pix is not None:
            self._items.move_to_end(key)
            return pix
        self.misses += 1
        return self._load(key, path)

    def warm(self, path: str) -> None:
        """Decode ``path`` into the cache ahead of need (not counted as a miss; no-op when cached)."""
        key = os.path.abspath(path)
        if key not in self._items:
            self._load(key, path)

    def _load(self, key: str, path: str | None) -> QtGui.QPixmap:
        pix = QtGui.QPixmap(path) if path and os.path.isfile(path) else QtGui.QPixmap()
        if pix.isNull():
            pix = placeholder_pixmap(self.size, "no image file")
        else:
            pix = scaled_smooth(pix, self.size)
        self._items[key] = pix
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return pix

    def __contains__(self, path: str) -> bool:
        return os.path.abspath(path) in self._items

    def __len__(self) -> int:
        return len(self._items)


def scaled_smooth(pixmap: QtGui.QPixmap, size: int) -> QtGui.QPixmap:
    """``pixmap`` fitted into a ``size`` square, aspect kept, smoothly filtered."""
    return pixmap.scaled(
        size,
        size,
        QtCore.Qt.AspectRatioMode.KeepAspectRatio,
        QtCore.Qt.TransformationMode.SmoothTransformation,
    )


def placeholder_pixmap(size: int, text: str) -> QtGui.QPixmap:
    pix = QtGui.QPixmap(size, size)
    pix.fill(QtGui.QColor("#0d1117"))
    painter = QtGui.QPainter(pix)
    painter.setPen(QtGui.QColor(COLORS["muted"]))
    painter.drawRect(0, 0, size - 1, size - 1)
    painter.drawText(pix.rect(), QtCore.Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return pix


def array_to_pixmap(img: np.ndarray) -> QtGui.QPixmap:
    """A uint8 (H, W, 3) RGB array as a QPixmap (copied, so the array may be released)."""
    img = np.ascontiguousarray(img)
    h, w, _ = img.shape
    qimg = QtGui.QImage(img.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
    return QtGui.QPixmap.fromImage(qimg.copy())


class ImageTile:
    """What one image slot shows: a pixmap in a coloured frame above a two-line caption."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self.pixmap = placeholder_pixmap(size, "—")
        self.caption = ""
        self.frame = QtGui.QColor(COLORS["border"])
        self.frame_width = 2

    def set(self, pixmap: QtGui.QPixmap, caption: str, frame: str, width: int = 2) -> None:
        """Show ``pixmap`` framed in ``frame`` (``width`` px) above ``caption`` (from the next paint on)."""
        self.pixmap = pixmap
        self.caption = caption
        self.frame = QtGui.QColor(frame)
        self.frame_width = width


class HistoryStrip:
    """The last windows' true images, newest first, with the colour of how the decoder did."""

    def __init__(self, n: int = 14, size: int = 44) -> None:
        self.n, self.size = n, size
        self.items: list[tuple[QtGui.QPixmap, QtGui.QColor]] = []

    def push(self, pixmap: QtGui.QPixmap, color: str) -> None:
        self.items = [(pixmap, QtGui.QColor(color)), *self.items][: self.n]


class RetrievalView(QtWidgets.QWidget):
    """The true image, the top-k images and the strip of recent windows, painted by hand in one pass.

    Why not labels in layouts: a new retrieval then meant ~20 ``setStyleSheet`` calls (each re-polishes a
    widget) and a repaint of every label and of the panel behind them; here it is one opaque widget whose
    repaint is a few ``drawPixmap`` / ``drawText`` calls and nothing else.
    """

    GAP = 10

    def __init__(self, true_tile: ImageTile, tiles: list[ImageTile], history: HistoryStrip) -> None:
        super().__init__()
        self.true_tile, self.tiles, self.history = true_tile, tiles, history
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self._font = QtGui.QFont(MONO, 8)
        self._caption_h = 2 * QtGui.QFontMetrics(self._font).lineSpacing() + 2
        self._colors = {k: QtGui.QColor(COLORS[k]) for k in ("panel", "window", "border", "text", "muted")}
        side = true_tile.size + 8
        self._tile_h = side + 3 + self._caption_h
        width = (len(tiles) + 1) * (side + self.GAP) + self.GAP
        self.setMinimumSize(width, self._tile_h + self.GAP + history.size + 6)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 (Qt API)
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), self._colors["panel"])
        side = self.true_tile.size + 8
        self._paint_tile(p, self.true_tile, 0)
        x_sep = side + self.GAP
        p.setPen(self._colors["border"])
        p.drawLine(x_sep, 4, x_sep, self._tile_h - 4)
        for i, tile in enumerate(self.tiles):
            self._paint_tile(p, tile, x_sep + 1 + self.GAP + i * (side + self.GAP))
        self._paint_history(p, self.height() - (self.history.size + 6))
        p.end()

    def _paint_tile(self, p: QtGui.QPainter, tile: ImageTile, x: int) -> None:
        side = tile.size + 8
        w = tile.frame_width
        box = QtCore.QRectF(x + w / 2, w / 2, side - w, side - w)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        p.setPen(QtCore.Qt.PenStyle.NoPen)
        p.setBrush(self._colors["window"])
        p.drawRoundedRect(box, 4, 4)
        pix = tile.pixmap
        p.drawPixmap(x + (side - pix.width()) // 2, (side - pix.height()) // 2, pix)
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        p.setPen(QtGui.QPen(tile.frame, w))
        p.drawRoundedRect(box, 4, 4)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
        p.setFont(self._font)
        p.setPen(self._colors["text"])
        p.drawText(
            QtCore.QRect(x - 4, side + 3, side + 8, self._caption_h),
            QtCore.Qt.AlignmentFlag.AlignHCenter | QtCore.Qt.AlignmentFlag.AlignTop,
            tile.caption,
        )

    def _paint_history(self, p: QtGui.QPainter, y: int) -> None:
        cell = self.history.size + 6
        p.setFont(self.font())
        metrics = p.fontMetrics()
        middle = QtCore.Qt.AlignmentFlag.AlignVCenter
        # legend, right-aligned: a coloured square and a word per outcome
        x = self.width()
        for key, word in (("bad", "miss"), ("warn", "top-5"), ("ok", "top-1")):
            x -= metrics.horizontalAdvance(word)
            p.setPen(self._colors["muted"])
            p.drawText(QtCore.QRect(x, y, metrics.horizontalAdvance(word) + 2, cell), middle, word)
            x -= 14
            p.fillRect(QtCore.QRect(x, y + cell // 2 - 4, 9, 9), QtGui.QColor(COLORS[key]))
            x -= 12
        legend_x = x
        label_w = metrics.horizontalAdvance("recent") + 8
        p.setPen(self._colors["muted"])
        p.drawText(QtCore.QRect(0, y, label_w, cell), middle, "recent")
        # as many of the last windows as fit between the label and the legend, newest first
        fit = max(0, (legend_x - label_w) // (cell + 4))
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        for i, (pix, color) in enumerate(self.history.items[:fit]):
            x = label_w + i * (cell + 4)
            p.drawPixmap(x + (cell - pix.width()) // 2, y + (cell - pix.height()) // 2, pix)
            p.setPen(QtGui.QPen(color, 2))
            p.drawRoundedRect(QtCore.QRectF(x + 1, y + 1, cell - 2, cell - 2), 3, 3)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)


def _elide(text: str, n: int = 16) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class RetrievalPanel(Panel):
    """The true image (hit / miss highlighted) beside the current top-k retrieved images and scores."""

    def __init__(
        self,
        k: int = 5,
        size: int = 140,
        gallery_dir: str | None = None,
        history: int = 14,
        history_size: int = 44,
    ) -> None:
        super().__init__("Decoded · top-k retrieval")
        self.cache = PixmapCache(size)
        self.gallery_dir = gallery_dir
        self.true_tile = ImageTile(size)
        self.tiles = [ImageTile(size) for _ in range(k)]
        self.history = HistoryStrip(history, history_size)
        self.view = RetrievalView(self.true_tile, self.tiles, self.history)
        self.body.addWidget(self.view, 1)
        self._small: OrderedDict[int, QtGui.QPixmap] = OrderedDict()  # history thumbnails by source pixmap
        self._history_size = history_size
        self.true_tile.set(placeholder_pixmap(size, "true image"), "seen\n(unknown)", COLORS["border"])
        self._version = -1

    def gallery_thumbnails(self, budget_mb: float = 128.0) -> list[str]:
        """The gallery's thumbnails (``gallery_dir/images/*.png``) to decode ahead of the first retrievals.

        Decoding a thumbnail costs ~0.3 ms (a few ms on a busy CPU) and a retrieval usually shows ~6 not
        seen before, so decoding them when a retrieval arrives sits on its path to the screen. When the
        whole gallery fits ``budget_mb`` (4 bytes per pixel at the tile size: ~1600 thumbnails in 128 MB)
        the cache grows to hold it and the paths are returned; otherwise nothing is (the cache stays an
        LRU of what was shown).
        """
        if not self.gallery_dir:
            return []
        folder = os.path.join(self.gallery_dir, "images")
        try:
            names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png"))
        except OSError:
            return []
        if not names or len(names) * 4 * self.cache.size**2 > budget_mb * 2**20:
            return []
        self.cache.capacity = max(self.cache.capacity, len(names) + 64)  # + placeholders and strays
        return [os.path.join(folder, n) for n in names]

    def paint_now(self) -> None:
        """Paint what :meth:`update_from` changed, synchronously: the images and the seq in the title."""
        self.view.repaint()
        self.subtitle.repaint()

    def update_from(self, latest: LatestMessage | None) -> bool:
        if latest is None or latest.version == self._version:
            return False
        self._version = latest.version
        header, scores = latest.msg.header, np.asarray(latest.msg.arrays[0], dtype=np.float64)
        ids = [str(i) for i in header.get("ids") or []]
        paths = list(header.get("paths") or [None] * len(ids))
        true_id = header.get("true_image_id")
        rank = header.get("rank_of_true")
        if rank is None and true_id in ids:
            rank = ids.index(true_id)
        for i, tile in enumerate(self.tiles):
            if i >= len(ids):
                tile.set(placeholder_pixmap(self.cache.size, "—"), "", COLORS["border"])
                continue
            hit = true_id is not None and ids[i] == true_id
            frame = COLORS["ok"] if hit else COLORS["border"]
            caption = f"#{i + 1} {_elide(ids[i])}\nscore {scores[i]:.3f}"
            tile.set(self.cache.get(paths[i], ids[i]), caption, frame, 3 if hit else 1)
        self._draw_truth(true_id, rank, ids, paths)
        self.subtitle.setText(f"k={len(ids)} · seq {latest.msg.header.get('seq', '?')}")
        return True

    def _draw_truth(self, true_id: Any, rank: Any, ids: list[str], paths: list[Any]) -> None:
        if true_id is None:
            self.true_tile.set(
                placeholder_pixmap(self.cache.size, "no ground truth"), "seen\n(unknown)", COLORS["border"]
            )
            return
        true_id = str(true_id)
        path = paths[ids.index(true_id)] if true_id in ids else self._guess_path(true_id, paths)
        if isinstance(rank, int) and rank == 0:
            color, verdict = COLORS["ok"], "HIT @1"
        elif isinstance(rank, int) and rank < 5:
            color, verdict = COLORS["warn"], f"top-5 (rank {rank + 1})"
        else:
            color, verdict = COLORS["bad"], "MISS" if rank is None else f"MISS (rank {rank + 1})"
        pixmap = self.cache.get(path, true_id)
        self.true_tile.set(pixmap, f"seen {_elide(true_id, 11)}\n{verdict}", color, 4)
        self._push_history(pixmap, color)

    def _push_history(self, pixmap: QtGui.QPixmap, color: str) -> None:
        key = pixmap.cacheKey()
        small = self._small.get(key)
        if small is None:
            small = scaled_smooth(pixmap, self._history_size)
            self._small[key] = small
            while len(self._small) > self.cache.capacity:
                self._small.popitem(last=False)
        else:
            self._small.move_to_end(key)
        self.history.push(small, color)

    def pixmap_of(self, image_id: str) -> QtGui.QPixmap | None:
        """The gallery thumbnail of ``image_id`` (cached), None when the gallery has none."""
        path = self._guess_path(image_id, [])
        return None if path is None else self.cache.get(path, image_id)

    def _guess_path(self, image_id: str, paths: list[Any]) -> str | None:
        # galleries store thumbnails as images/<id>.png, next to the retrieved ones
        folders = [os.path.join(self.gallery_dir, "images"), self.gallery_dir] if self.gallery_dir else []
        folders += [os.path.dirname(p) for p in paths[:1] if isinstance(p, str)]
        for folder in folders:
            candidate = os.path.join(folder, f"{image_id}.png")
            if os.path.isfile(candidate):
                return candidate
        return None


class GeneratedPanel(Panel):
    """The latest image from the generator, beside the image that was seen when the window names one.

    Parameters
    ----------
    size : int
        Minimum side of each image (px).
    seen_pixmap : callable | None
        ``image_id -> QPixmap`` of the seen stimulus (the retrieval panel's thumbnails), or None.
    """

    def __init__(self, size: int = 200, seen_pixmap=None) -> None:
        super().__init__("Generated · beside the seen image")
        self.size = size
        self._seen_pixmap = seen_pixmap
        row = QtWidgets.QHBoxLayout()
        self.seen = QtWidgets.QLabel()
        self.image = QtWidgets.QLabel()
        for label, text in ((self.seen, "seen"), (self.image, "waiting for image")):
            label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            label.setMinimumSize(size // 2, size // 2)
            label.setPixmap(placeholder_pixmap(size // 2, text))
            row.addWidget(label, 1)
        self.body.addLayout(row, 1)
        self.caption = QtWidgets.QLabel("")
        self.caption.setFont(QtGui.QFont(MONO, 8))
        self.caption.setAlignment(QtCore.Qt.AlignmentFlag.AlignHCenter)
        self.body.addWidget(self.caption)
        self._version = -1
        self._seen_id: Any = None

    def update_from(self, latest: LatestMessage | None) -> bool:
        if latest is None or latest.version == self._version:
            return False
        self._version = latest.version
        pix = array_to_pixmap(np.asarray(latest.msg.arrays[0]))
        side = max(32, min(self.image.width(), self.image.height()) - 4)
        self.image.setPixmap(scaled_smooth(pix, side))
        header = latest.msg.header
        h, w = latest.msg.arrays[0].shape[:2]
        image_id = header.get("image_id")
        if image_id != self._seen_id:
            self._seen_id = image_id
            seen = self._seen_pixmap(str(image_id)) if image_id and self._seen_pixmap else None
            self.seen.setPixmap(
                scaled_smooth(seen, side) if seen is not None else placeholder_pixmap(side, "seen: unknown")
            )
        two_way = header.get("two_way")
        self.caption.setText(
            (f"seen {_elide(str(image_id), 14)} · " if image_id else "")
            + f"generated {w}×{h}"
            + (f" · 2-way {float(two_way):.0%}" if isinstance(two_way, int | float) else "")
            + f" · skipped {int(header.get('skipped') or 0)}"
        )
        return True

    def paint_now(self) -> None:
        """Paint what :meth:`update_from` changed, synchronously (one paint pass for all)."""
        region = QtGui.QRegion()
        for widget in (self.seen, self.image, self.caption):
            region += QtCore.QRect(widget.mapTo(self, QtCore.QPoint(0, 0)), widget.rect().size())
        self.repaint(region)


# ---------------------------------------------------------------------- numbers
def _ms(value: float) -> str:
    return "—" if not math.isfinite(value) else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


class LatencyPanel(Panel):
    """Per-stage p50/p99, sample→display latency, dropped messages, node status and alarms."""

    def __init__(self) -> None:
        super().__init__("Latency · status")
        self.table = QtWidgets.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["stage (ms after t_sample)", "p50 ms", "p99 ms", "n"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.table.setShowGrid(False)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            hdr.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.body.addWidget(self.table)
        self.dropped = QtWidgets.QLabel("")
        self.dropped.setFont(QtGui.QFont(MONO, 9))
        self.dropped.setWordWrap(False)
        self.body.addWidget(self.dropped)
        self.nodes = QtWidgets.QLabel("")
        self.nodes.setWordWrap(True)
        self.nodes.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.body.addWidget(self.nodes)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setLabel("left", "sample→display ms")
        self.plot.setLabel("bottom", "seconds ago")
        self.plot.setXRange(-self.PLOT_S, 0, padding=0.01)
        self.plot.showGrid(x=False, y=True, alpha=0.15)
        tune_plot(self.plot)
        self.plot.addLegend(offset=(8, 4), labelTextColor=COLORS["muted"])
        symbol = {"symbolSize": 5, "symbolPen": None}
        self.curves = {
            "retrieval": self.plot.plot(
                name="retrieval", pen=pg.mkPen(COLORS["accent"]), symbolBrush=COLORS["accent"], **symbol
            ),
            "image": self.plot.plot(
                name="image", pen=pg.mkPen(COLORS["marker"]), symbolBrush=COLORS["marker"], **symbol
            ),
        }
        self.body.addWidget(self.plot, 1)
        self.alarms = QtWidgets.QLabel("")
        self.alarms.setWordWrap(True)
        self.alarms.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.alarms.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft)
        self.body.addWidget(self.alarms)

    PLOT_S = 60.0

    def update_from(self, state: DisplayState, window_s: float) -> None:
        """Refresh everything (the window refreshes the parts one at a time, see ``DisplayWindow``)."""
        self.update_table(state, window_s)
        self.update_plot(state)
        self.update_status(state)

    def update_table(self, state: DisplayState, window_s: float) -> list[QtWidgets.QWidget]:
        """Per-stage latencies and drop counts; returns the widgets that changed."""
        self.subtitle.setText(f"last {window_s:g} s")
        rows = [(_stage_label(stage), s) for stage, s in state.stage_latencies().items()]
        rows.append(("last stage → display (bus hop)", state.bus_to_display()))
        rows += [(f"▶ {kind} → display (drawn)", s) for kind, s in state.draw_latencies().items()]
        self.table.setRowCount(len(rows))
        self.table.setFixedHeight(self.table.horizontalHeader().height() + 20 * max(len(rows), 3) + 4)
        for r, (name, s) in enumerate(rows):
            drawn = name.startswith("▶")
            values = [name, _ms(s["p50_ms"]), _ms(s["p99_ms"]), str(s["n"])]
            for c, text in enumerate(values):
                item = self.table.item(r, c)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.table.setItem(r, c, item)
                item.setText(text)
                item.setForeground(QtGui.QColor(COLORS["accent"] if drawn else COLORS["text"]))
                if c:
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
        d = state.dropped()
        changed = _set_text(
            self.dropped,
            f"dropped: bus gaps {d['bus_gaps']} · malformed {d['bus_malformed']} · bad payload "
            f"{d['invalid_payload']}\nnot drawn (newer came) {d['superseded']} · skipped upstream "
            f"{d['upstream_skipped']}",
        )
        return [self.table.viewport(), *changed]

    def update_plot(self, state: DisplayState) -> list[QtWidgets.QWidget]:
        """The sample→display scatter of the last minute; returns the widgets that changed."""
        now = state.clock()
        for kind, (ts, ms) in state.recent_draws(self.PLOT_S).items():
            if kind in self.curves:
                self.curves[kind].setData(ts - now, ms)
        return [self.plot.viewport()]

    def update_status(self, state: DisplayState) -> list[QtWidgets.QWidget]:
        """Node badges and alarms; returns the widgets that changed."""
        bus_state, _ = state.bus_state()
        parts = [_badge("bus", bus_state, bus_state == "connected")]
        for node in state.node_statuses():
            ok = node.state.lower() in ("ok", "running", "streaming", "live", "connected", "idle")
            name = f"{node.node}@{node.host}" if node.host else node.node
            parts.append(_badge(name, node.state or "?", ok, _stream_health(node.stats)))
        changed = _set_text(self.nodes, " ".join(parts))
        alarms = state.alarms()
        if alarms:
            items = "".join(f"<div>⚠ {_html(a)}</div>" for a in alarms[:8])
            more = f"<div>… {len(alarms) - 8} more</div>" if len(alarms) > 8 else ""
            text = f"<div style='color:{COLORS['bad']}'>{items}{more}</div>"
        else:
            text = f"<span style='color:{COLORS['ok']}'>✔ no alarms</span>"
        return changed + _set_text(self.alarms, text)


def _set_text(label: QtWidgets.QLabel, text: str) -> list[QtWidgets.QWidget]:
    """Set ``label``'s text; returns ``[label]`` if it changed (to be repainted), else ``[]``."""
    if label.text() == text:
        return []
    label.setText(text)
    return [label]


def _stage_label(stage: str) -> str:
    return "display (received)" if stage == STAGE_RECEIVED else stage


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# stream-health counters an acquisition node may report in its status stats
HEALTH_KEYS = ("gaps", "reconnects", "nan_samples", "stalled")


def _stream_health(stats: dict[str, Any]) -> str:
    found = [
        (k, v) for k in HEALTH_KEYS if isinstance(v := stats.get(k), int | float) and not isinstance(v, bool)
    ]
    return " · ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in found)


def _badge(name: str, state: str, ok: bool, detail: str = "") -> str:
    color = COLORS["ok"] if ok else COLORS["warn"]
    extra = f"&nbsp;<span style='color:{COLORS['muted']}'>({_html(detail)})</span>" if detail else ""
    return (
        f"<span style='white-space:nowrap'><span style='color:{COLORS['muted']}'>{_html(name)}</span>&nbsp;"
        f"<span style='color:{color}'>●&nbsp;{_html(state)}</span>{extra}</span>&nbsp;&nbsp; "
    )


class AccuracyPanel(Panel):
    """Running top-1 / top-5 over windows whose true image is known, with chance levels when known."""

    def __init__(self) -> None:
        super().__init__("Accuracy so far")
        row = QtWidgets.QHBoxLayout()
        self.top1 = self._big(COLORS["ok"])
        self.top5 = self._big(COLORS["accent"])
        row.addWidget(self.top1)
        row.addWidget(self.top5)
        self.body.addLayout(row)
        self.detail = QtWidgets.QLabel("no ground truth yet")
        self.detail.setWordWrap(True)  # several lines of figures in a narrow panel
        self.detail.setStyleSheet(f"color: {COLORS['muted']}; font-size: 10px;")
        self.detail.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.body.addWidget(self.detail)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.setLabel("bottom", "windows with known image")
        self.plot.getAxis("left").setTicks([[(0, "0"), (0.5, "50%"), (1, "100%")], []])
        tune_plot(self.plot)
        self.curve1 = self.plot.plot(pen=pg.mkPen(COLORS["ok"], width=2))
        self.curve5 = self.plot.plot(pen=pg.mkPen(COLORS["accent"], width=2))
        self.body.addWidget(self.plot, 1)
        self._n = -1

    @staticmethod
    def _big(color: str) -> QtWidgets.QLabel:
        label = QtWidgets.QLabel("—")
        label.setStyleSheet(f"color: {color}; font-size: 14px; font-weight: bold;")
        label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        # the text must not widen the panel (the layout would jump as the numbers change)
        label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        return label

    def update_from(self, state: DisplayState, chance_n: int | None = None) -> bool:
        """Refresh if windows with a known image were added; True when something changed."""
        acc, history = state.accuracy()
        if acc["n"] == self._n:
            return False
        self._n = acc["n"]
        if not acc["n"]:
            return False
        chance = f" (chance {1 / chance_n:.1%} / {min(1.0, 5 / chance_n):.1%})" if chance_n else ""
        size = f" ({chance_n})" if chance_n else ""
        whole = f"whole gallery{size}: {acc['top1']:.0%} / {acc['top5']:.0%}{chance}"
        lines = []
        if acc["test_n"] and acc["n_test"]:
            n = acc["n_test"]
            # papers report N-way retrieval among the test images: the big numbers; the gallery below
            self.top1.setText(f"top-1 {acc['test_top1']:.0%}")
            self.top5.setText(f"top-5 {acc['test_top5']:.0%}")
            lines.append(f"among the {n} test images ({n}-way, chance {1 / n:.0%} / {min(1.0, 5 / n):.0%})")
        else:
            self.top1.setText(f"top-1 {acc['top1']:.0%}")
            self.top5.setText(f"top-5 {acc['top5']:.0%}")
        lines.append(whole)
        if acc["two_way_n"]:
            lines.append(f"reconstruction 2-way {acc['two_way']:.0%} (chance 50 %)")
        lines.append(f"n = {acc['n']} windows")
        self.detail.setText("\n".join(lines))
        h = np.asarray(history, dtype=np.float64)
        self.curve1.setData(h[:, 0], h[:, 1])
        self.curve5.setData(h[:, 0], h[:, 2])
        return True

    def changed_widgets(self) -> list[QtWidgets.QWidget]:
        """What :meth:`update_from` changes, to be repainted (the plot does not repaint by itself)."""
        return [self.top1, self.top5, self.detail, self.plot.viewport()]
