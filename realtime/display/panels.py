"""The display's panels (PySide6 + pyqtgraph), each fed from a :class:`~realtime.display.state.DisplayState`.

Panels never touch the bus: the window's redraw timer hands them snapshots. Each ``update_from`` returns
quickly and only rebuilds what changed, so a 60 fps timer stays cheap.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from realtime.display.state import STAGE_RECEIVED, DisplayState, LatestMessage, SignalView

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


# ---------------------------------------------------------------------- signal traces
class TracePanel(Panel):
    """Scrolling multichannel traces of one ``signal.<stream>`` preview, paged, with marker lines."""

    def __init__(self, page_size: int = 16, seconds: float = 10.0, max_labels: int = 24) -> None:
        super().__init__("Signal")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.page_size = page_size
        self.seconds = seconds
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
        self.body.addWidget(self.plot, 1)
        self.curves = []
        for i in range(page_size):
            pen = pg.mkPen(TRACE_COLORS[i % len(TRACE_COLORS)], width=1)
            curve = self.plot.plot(pen=pen)
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")
            self.curves.append(curve)
        # all marker lines are one item (pairs of points) and labels come from a fixed pool: a frame costs
        # one setData plus a few moved labels, however many onsets are on screen
        self.marker_curve = self.plot.plot(
            pen=pg.mkPen(COLORS["marker"], width=1, style=QtCore.Qt.PenStyle.DashLine), connect="pairs"
        )
        self.marker_labels: list[pg.TextItem] = []
        for _ in range(max_labels):
            label = pg.TextItem("", color=COLORS["marker"], fill=(13, 17, 23, 200), anchor=(0.5, 0))
            label.setVisible(False)
            self.plot.addItem(label, ignoreBounds=True)
            self.marker_labels.append(label)
        self.placeholder = pg.TextItem(
            "waiting for signal.* on the bus…", color=COLORS["muted"], anchor=(0.5, 0.5)
        )
        self.placeholder.setPos(-seconds / 2, -page_size / 2)
        self.plot.addItem(self.placeholder)
        self._drawn_version: tuple[Any, ...] = ()
        self.n_channels = 0

    def page_by(self, delta: int) -> None:
        n_pages = max(1, math.ceil(self.n_channels / self.page_size))
        self.page = (self.page + delta) % n_pages
        self._drawn_version = ()

    def next_stream(self) -> None:
        self.stream_index += 1
        self._drawn_version = ()

    def update_from(self, state: DisplayState) -> bool:
        streams = state.signal_streams()
        if not streams:
            return False
        stream = streams[self.stream_index % len(streams)]
        view = state.signal_view(stream)
        markers = state.markers()
        key = (
            stream,
            view.version if view else -1,
            len(markers),
            markers[-1][0] if markers else 0,
            self.page,
        )
        if view is None or key == self._drawn_version or view.timestamps.size < 2:
            return False
        self._drawn_version = key
        self._draw(view, markers, len(streams))
        return True

    def _draw(self, view: SignalView, markers: list[tuple[float, str, str]], n_streams: int) -> None:
        self.placeholder.setVisible(False)
        self.n_channels = len(view.ch_names)
        n_pages = max(1, math.ceil(self.n_channels / self.page_size))
        self.page %= n_pages
        first = self.page * self.page_size
        chans = list(range(first, min(first + self.page_size, self.n_channels)))
        t_newest = float(view.timestamps[-1])
        x = view.timestamps - t_newest
        keep = x >= -self.seconds
        x = x[keep]
        data = view.data[chans][:, keep]
        # auto-scale each channel into its lane: robust centre and spread of what is on screen
        centre = np.median(data, axis=1, keepdims=True)
        lo, hi = np.percentile(data, [1, 99], axis=1, keepdims=True)
        spread = np.maximum(hi - lo, 1e-12 + 1e-6 * np.abs(centre))
        lanes = (data - centre) / spread * 0.8
        # do not draw a line across a gap in the stream (an outage, a restart)
        ts = view.timestamps[keep]
        connect = np.append(np.diff(ts) < 2.5 / view.sfreq, False)
        ticks = []
        for i, curve in enumerate(self.curves):
            if i < len(chans):
                curve.setData(x, lanes[i] - i, connect=connect)
                curve.setVisible(True)
                ticks.append((-i, view.ch_names[chans[i]]))
            else:
                curve.setVisible(False)
        self.plot.getAxis("left").setTicks([ticks, []])
        self._draw_markers(
            [(t - t_newest, label, n) for t, _, label, n in markers if t - t_newest >= -self.seconds],
            len(chans),
        )
        stream_txt = f"{view.stream}" + (
            f" ({self.stream_index % n_streams + 1}/{n_streams}, T: next)" if n_streams > 1 else ""
        )
        self.title.setText(f"SIGNAL · {stream_txt}")
        self.subtitle.setText(
            f"ch {chans[0] + 1}–{chans[-1] + 1} of {self.n_channels} · page {self.page + 1}/{n_pages}"
            f" (PgUp/PgDn) · {view.sfreq:g} Hz preview · auto-scaled"
        )

    def _draw_markers(self, visible: list[tuple[float, str, int]], n_lanes: int) -> None:
        top, bottom = 0.5, -max(n_lanes, 1) + 0.5
        xs = np.repeat([x for x, _, _ in visible], 2)
        ys = np.tile([top, bottom], len(visible))
        self.marker_curve.setData(xs, ys)
        # label newest first, on two alternating rows, skipping labels that would overlap the last one
        min_gap = 0.09 * self.seconds
        last_x = {0: math.inf, 1: math.inf}
        shown = []
        for x, label, n in reversed(visible):
            row = n % 2
            if last_x[row] - x >= min_gap and len(shown) < len(self.marker_labels):
                shown.append((x, label, row))
                last_x[row] = x
        for item, (x, label, row) in zip(self.marker_labels, shown, strict=False):
            if item.textItem.toPlainText() != label:
                item.setText(label)
            item.setPos(x, top - 0.02 - 0.7 * row)
            item.setVisible(True)
        for item in self.marker_labels[len(shown) :]:
            item.setVisible(False)


# ---------------------------------------------------------------------- images
class PixmapCache:
    """Bounded LRU cache of thumbnails loaded from image files (a placeholder when a file is missing)."""

    def __init__(self, size: int = 128, capacity: int = 256) -> None:
        self.size = size
        self.capacity = capacity
        self._items: OrderedDict[str, QtGui.QPixmap] = OrderedDict()
        self.misses = 0

    def get(self, path: str | None, label: str = "") -> QtGui.QPixmap:
        key = path or f"<missing:{label}>"
        pix = self._items.get(key)
        if pix is not None:
            self._items.move_to_end(key)
            return pix
        self.misses += 1
        pix = QtGui.QPixmap(path) if path and os.path.isfile(path) else QtGui.QPixmap()
        if pix.isNull():
            pix = placeholder_pixmap(self.size, "no image file")
        else:
            pix = pix.scaled(
                self.size,
                self.size,
                QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                QtCore.Qt.TransformationMode.SmoothTransformation,
            )
        self._items[key] = pix
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return pix

    def __len__(self) -> int:
        return len(self._items)


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


class ImageTile(QtWidgets.QWidget):
    """One image with a coloured frame and a two-line caption."""

    def __init__(self, size: int = 128) -> None:
        super().__init__()
        self.size = size
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(3)
        self.image = QtWidgets.QLabel()
        self.image.setFixedSize(size + 8, size + 8)
        self.image.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.caption = QtWidgets.QLabel("")
        self.caption.setAlignment(QtCore.Qt.AlignmentFlag.AlignHCenter | QtCore.Qt.AlignmentFlag.AlignTop)
        self.caption.setFixedWidth(size + 8)
        self.caption.setFont(QtGui.QFont(MONO, 8))
        layout.addWidget(self.image, 0, QtCore.Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.caption)
        self.set(placeholder_pixmap(size, "—"), "", COLORS["border"])

    def set(self, pixmap: QtGui.QPixmap, caption: str, frame: str, width: int = 2) -> None:
        self.image.setPixmap(pixmap)
        self.image.setStyleSheet(f"border: {width}px solid {frame}; border-radius: 4px; background: #0d1117;")
        self.caption.setText(caption)


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
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(10)
        self.true_tile = ImageTile(size)
        row.addWidget(self.true_tile)
        sep = QtWidgets.QFrame()
        sep.setFrameShape(QtWidgets.QFrame.Shape.VLine)
        sep.setStyleSheet(f"color: {COLORS['border']};")
        row.addWidget(sep)
        self.tiles = [ImageTile(size) for _ in range(k)]
        for tile in self.tiles:
            row.addWidget(tile)
        row.addStretch(1)
        self.body.addLayout(row)
        # the last windows at a glance: what was seen, framed by how the decoder did
        strip = QtWidgets.QHBoxLayout()
        strip.setSpacing(4)
        recent = QtWidgets.QLabel("recent")
        recent.setStyleSheet(f"color: {COLORS['muted']};")
        strip.addWidget(recent)
        self.history: list[QtWidgets.QLabel] = []
        for _ in range(history):
            label = QtWidgets.QLabel()
            label.setFixedSize(history_size + 6, history_size + 6)
            label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
            label.setVisible(False)
            strip.addWidget(label)
            self.history.append(label)
        strip.addStretch(1)
        legend = QtWidgets.QLabel(
            f"<span style='color:{COLORS['ok']}'>■</span> top-1 &nbsp;"
            f"<span style='color:{COLORS['warn']}'>■</span> top-5 &nbsp;"
            f"<span style='color:{COLORS['bad']}'>■</span> miss"
        )
        legend.setStyleSheet(f"color: {COLORS['muted']};")
        strip.addWidget(legend)
        self.body.addStretch(1)
        self.body.addLayout(strip)
        self._recent: list[tuple[QtGui.QPixmap, str]] = []
        self._history_size = history_size
        self.true_tile.set(placeholder_pixmap(size, "true image"), "seen\n(unknown)", COLORS["border"])
        self._version = -1

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
        small = pixmap.scaled(
            self._history_size,
            self._history_size,
            QtCore.Qt.AspectRatioMode.KeepAspectRatio,
            QtCore.Qt.TransformationMode.SmoothTransformation,
        )
        self._recent = [(small, color), *self._recent][: len(self.history)]
        for label, (pix, frame) in zip(self.history, self._recent, strict=False):
            label.setPixmap(pix)
            label.setStyleSheet(f"border: 2px solid {frame}; border-radius: 3px;")
            label.setVisible(True)

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
    """The latest image from the generator."""

    def __init__(self, size: int = 200) -> None:
        super().__init__("Generated")
        self.size = size
        self.image = QtWidgets.QLabel()
        self.image.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(size, size)
        self.image.setPixmap(placeholder_pixmap(size, "waiting for image"))
        self.caption = QtWidgets.QLabel("")
        self.caption.setFont(QtGui.QFont(MONO, 8))
        self.caption.setAlignment(QtCore.Qt.AlignmentFlag.AlignHCenter)
        self.body.addWidget(self.image, 1)
        self.body.addWidget(self.caption)
        self._version = -1

    def update_from(self, latest: LatestMessage | None) -> bool:
        if latest is None or latest.version == self._version:
            return False
        self._version = latest.version
        pix = array_to_pixmap(np.asarray(latest.msg.arrays[0]))
        side = max(32, min(self.image.width(), self.image.height()) - 4)
        self.image.setPixmap(
            pix.scaled(
                side,
                side,
                QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                QtCore.Qt.TransformationMode.SmoothTransformation,
            )
        )
        header = latest.msg.header
        h, w = latest.msg.arrays[0].shape[:2]
        image_id = header.get("image_id")
        self.caption.setText(
            f"{w}×{h}"
            + (f" · seen {_elide(str(image_id), 14)}" if image_id else "")
            + f" · skipped {int(header.get('skipped') or 0)}"
        )
        return True


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
        now = state.clock()
        for kind, (ts, ms) in state.recent_draws(self.PLOT_S).items():
            if kind in self.curves:
                self.curves[kind].setData(ts - now, ms)
        d = state.dropped()
        self.dropped.setText(
            f"dropped: bus gaps {d['bus_gaps']} · malformed {d['bus_malformed']} · bad payload "
            f"{d['invalid_payload']}\nnot drawn (newer came) {d['superseded']} · skipped upstream "
            f"{d['upstream_skipped']}"
        )
        bus_state, _ = state.bus_state()
        parts = [_badge("bus", bus_state, bus_state == "connected")]
        for node in state.node_statuses():
            ok = node.state.lower() in ("ok", "running", "streaming", "live", "connected", "idle")
            parts.append(_badge(node.node, node.state or "?", ok, _stream_health(node.stats)))
        self.nodes.setText(" ".join(parts))
        alarms = state.alarms()
        if alarms:
            items = "".join(f"<div>⚠ {_html(a)}</div>" for a in alarms[:8])
            more = f"<div>… {len(alarms) - 8} more</div>" if len(alarms) > 8 else ""
            self.alarms.setText(f"<div style='color:{COLORS['bad']}'>{items}{more}</div>")
        else:
            self.alarms.setText(f"<span style='color:{COLORS['ok']}'>✔ no alarms</span>")


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
        self.detail.setStyleSheet(f"color: {COLORS['muted']};")
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
        self.curve1 = self.plot.plot(pen=pg.mkPen(COLORS["ok"], width=2))
        self.curve5 = self.plot.plot(pen=pg.mkPen(COLORS["accent"], width=2))
        self.body.addWidget(self.plot, 1)
        self._n = -1

    @staticmethod
    def _big(color: str) -> QtWidgets.QLabel:
        label = QtWidgets.QLabel("—")
        label.setStyleSheet(f"color: {color}; font-size: 18px; font-weight: bold;")
        label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        # the text must not widen the panel (the layout would jump as the numbers change)
        label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        return label

    def update_from(self, state: DisplayState, chance_n: int | None = None) -> None:
        acc, history = state.accuracy()
        if acc["n"] == self._n:
            return
        self._n = acc["n"]
        if not acc["n"]:
            return
        self.top1.setText(f"top-1 {acc['top1']:.0%}")
        self.top5.setText(f"top-5 {acc['top5']:.0%}")
        chance = f" · chance {1 / chance_n:.1%} / {min(1.0, 5 / chance_n):.1%}" if chance_n else ""
        self.detail.setText(f"n = {acc['n']} windows{chance}")
        h = np.asarray(history, dtype=np.float64)
        self.curve1.setData(h[:, 0], h[:, 1])
        self.curve5.setData(h[:, 0], h[:, 2])
