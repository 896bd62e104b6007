"""The presenter's Qt widget: paints whatever state the :class:`~calibration.presenter.Presenter` is in."""

from __future__ import annotations

from typing import Any, Protocol

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QKeyEvent, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QWidget


class PresenterView(Protocol):
    """What the window reads from and tells its presenter: the presenter owns the state, the window paints."""

    config: Any
    state: str
    current_trial: Any
    result: Any

    def pixmap(self, image_id: str) -> QPixmap: ...

    def status_text(self) -> str: ...

    def key_pressed(self, key: str) -> None: ...

    def abort(self, reason: str) -> None: ...


class PresenterWindow(QWidget):
    """Grey screen, fixation cross, image, photodiode patch, progress line, break text."""

    def __init__(self, presenter: PresenterView) -> None:
        super().__init__()
        self.presenter = presenter
        self.setWindowTitle(f"brainstream calibration — {presenter.config.name}")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAutoFillBackground(False)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.frames = 0

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        p = self.presenter
        d = p.config.display
        painter = QPainter(self)
        try:
            painter.fillRect(self.rect(), QColor(d.background, d.background, d.background))
            state = p.state
            if state == "image" and p.current_trial is not None:
                pix = p.pixmap(p.current_trial.image_id)
                x = (self.width() - pix.width()) // 2
                y = (self.height() - pix.height()) // 2
                painter.drawPixmap(x, y, pix)
                if p.current_trial.split == "catch":  # the attention target: a red frame around the image
                    painter.setPen(QPen(QColor(220, 30, 30), 6))
                    painter.drawRect(x - 4, y - 4, pix.width() + 8, pix.height() + 8)
            if state in ("image", "blank", "fixation"):
                self._fixation(painter, d.fixation_px)
            if state == "break":
                self._text(painter, "Break — press any key to continue", self.rect(), 18)
            if state == "done":
                msg = "Stopped — the calibration can be resumed" if p.result.aborted else "Done — thank you!"
                self._text(painter, msg, self.rect(), 18)
            self._photodiode(painter, d.photodiode_px, d.photodiode_corner, state == "image")
            self._text(painter, p.status_text(), QRect(0, 4, self.width(), 24), 10)
        finally:
            painter.end()
        self.frames += 1

    def _fixation(self, painter: QPainter, size: int) -> None:
        cx, cy, h = self.width() // 2, self.height() // 2, size // 2
        painter.setPen(QPen(QColor(0, 0, 0), max(2, size // 8)))
        painter.drawLine(cx - h, cy, cx + h, cy)
        painter.drawLine(cx, cy - h, cx, cy + h)

    def _photodiode(self, painter: QPainter, size: int, corner: str, on: bool) -> None:
        if size <= 0:
            return
        x = 0 if "left" in corner else self.width() - size
        y = 0 if "top" in corner else self.height() - size
        painter.fillRect(x, y, size, size, QColor(255, 255, 255) if on else QColor(0, 0, 0))

    def _text(self, painter: QPainter, text: str, rect: QRect, size: int) -> None:
        painter.setPen(QColor(20, 20, 20))
        font = QFont()
        font.setPointSize(size)
        painter.setFont(font)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)

    # ------------------------------------------------------------------ input
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.isAutoRepeat():
            return
        self.presenter.key_pressed("escape" if event.key() == Qt.Key.Key_Escape else "key")

    def closeEvent(self, event) -> None:  # noqa: N802
        if self.presenter.state not in ("done", "idle"):
            self.presenter.abort("window closed")
        super().closeEvent(event)

    def photodiode_color(self) -> tuple[int, int, int]:
        """Colour of the photodiode patch as painted now (tests grab the widget and look)."""
        d = self.presenter.config.display
        img = self.grab().toImage()
        x = 1 if "left" in d.photodiode_corner else self.width() - 2
        y = 1 if "top" in d.photodiode_corner else self.height() - 2
        c = img.pixelColor(x, y)
        return c.red(), c.green(), c.blue()
