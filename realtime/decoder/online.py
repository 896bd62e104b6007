"""The online decoding step, without threads: raw chunks and markers in, windows ready to encode out.

:class:`OnlineWindower` is what the live decoder node drives from its loop and what fast offline replay
drives from a file; both therefore cut exactly the windows the offline loaders cut (same
:class:`~models.preprocessing.Preprocessor`, same :func:`~models.windowing.cut_window`).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from brainstream.models.channels import ChannelPlan, plan_channels
from brainstream.models.events import parse_stimulus_marker
from brainstream.models.preprocessing import PreprocessingConfig, Preprocessor, RobustScaler
from brainstream.models.windowing import WindowSpec, WindowStatus, cut_window, sliding_window_ends
from brainstream.realtime.ringbuffer import RingBuffer


@dataclass
class ReadyWindow:
    """One window, ready for the encoder."""

    data: np.ndarray  # (n_channels, n_times) float32, model rate
    t_sample: float  # LSL time of the window's last sample
    kind: str  # "event" | "sliding"
    event: str | None = None  # the marker value for event-locked windows
    image_id: str | None = None
    split: str | None = None
    t_event: float | None = None


@dataclass
class WindowerStats:
    windows: int = 0
    dropped_late: int = 0
    dropped_missing: int = 0
    dropped_nan: int = 0
    ignored_markers: int = 0
    pending_events: int = 0

    @property
    def dropped_windows(self) -> int:
        return self.dropped_late + self.dropped_missing + self.dropped_nan

    def as_dict(self) -> dict[str, int]:
        return {
            "windows": self.windows,
            "dropped_windows": self.dropped_windows,
            "dropped_late": self.dropped_late,
            "dropped_missing": self.dropped_missing,
            "dropped_nan": self.dropped_nan,
            "ignored_markers": self.ignored_markers,
            "pending_events": self.pending_events,
        }


@dataclass
class _PendingEvent:
    onset: float
    value: str
    image_id: str | None
    split: str | None
    deadline: float = field(default=np.inf)


class OnlineWindower:
    """Preprocess raw chunks causally and cut event-locked or sliding windows at model rate.

    Parameters
    ----------
    stream_ch_names : sequence of str
        Channels of the incoming stream, in stream order. The model's channels are picked by name (reordered
        when needed, CTF names without their system suffix); extra stream channels are ignored; missing
        ones raise an error listing them, unless ``channels`` plans their repair.
    stream_sfreq : float
        Rate of the incoming stream (Hz). The preprocessor resamples to the model rate or says why it can't.
    model_ch_names : sequence of str
        Channels the encoder expects, in its order.
    preprocessing : PreprocessingConfig
        The chain the encoder was trained with (from its checkpoint).
    spec : WindowSpec
        Window relative to the event (``tmin``, ``tmax``) at the model rate.
    mode : {"event", "sliding"}
        Event-locked on stimulus markers, or a window every ``stride_s``.
    scaler : RobustScaler | None
        Per-channel statistics (from the checkpoint or a subject profile).
    stride_s : float
        Sliding mode: seconds between window ends (rounded to whole model-rate samples).
    max_wait_s : float
        Event mode: a window still incomplete this long after its nominal end is dropped as late.
    buffer_s : float
        Model-rate history kept for cutting windows.
    channels : ChannelPlan | None
        How the model's channels come from the stream (:func:`brainstream.models.channels.plan_channels`):
        missing and bad sensors are zeroed before preprocessing and repaired (masked / interpolated) after it.
        None: all must be present.
    """

    def __init__(
        self,
        stream_ch_names: Sequence[str],
        stream_sfreq: float,
        model_ch_names: Sequence[str],
        preprocessing: PreprocessingConfig,
        spec: WindowSpec,
        mode: str = "event",
        scaler: RobustScaler | None = None,
        stride_s: float = 0.05,
        max_wait_s: float = 2.0,
        buffer_s: float = 10.0,
        channels: ChannelPlan | None = None,
    ) -> None:
        if mode not in ("event", "sliding"):
            raise ValueError(f"mode must be 'event' or 'sliding', got {mode!r}")
        if channels is None:
            channels = plan_channels(stream_ch_names, model_ch_names, "mask", max_missing=0.0, what="model")
        elif channels.match.wanted != list(model_ch_names) or channels.match.available != list(
            stream_ch_names
        ):
            raise ValueError("the channel plan was made for other stream or model channels")
        self.channels = channels
        self._absent_rows = channels.repair.rows
        self.preprocessor = Preprocessor(preprocessing, list(model_ch_names), stream_sfreq, scaler)
        if abs(self.preprocessor.sfreq_out - spec.sfreq) > 1e-6 * spec.sfreq:
            raise ValueError(
                f"the preprocessing produces {self.preprocessor.sfreq_out} Hz but the windows expect "
                f"{spec.sfreq} Hz; the checkpoint's preprocessing and window disagree"
            )
        self.spec = spec
        self.mode = mode
        self.baseline = preprocessing.baseline if mode == "event" else None
        self.stride = max(1, int(round(stride_s * spec.sfreq)))
        self.max_wait_s = float(max_wait_s)
        capacity = max(int(np.ceil(buffer_s * spec.sfreq)), 4 * spec.n_times)
        self.buffer = RingBuffer(len(model_ch_names), capacity)
        self._events: collections.deque[_PendingEvent] = collections.deque()
        self._next_sliding = 0  # global model-rate index from which sliding window ends are searched
        self.stats = WindowerStats()

    def set_channels(self, channels: ChannelPlan) -> None:
        """Use another plan for the same stream and model channels (e.g. a sensor marked bad live). The
        filters keep their state: a newly bad sensor is zeroed from the next chunk on."""
        if channels.match.wanted != self.preprocessor.ch_names:
            raise ValueError("the channel plan was made for other model channels")
        self.channels = channels
        self._absent_rows = channels.repair.rows

    # ---------------------------------------------------------------------------------------- inputs
    def push_samples(self, data: np.ndarray, timestamps: np.ndarray) -> int:
        """Preprocess one raw chunk ``(n_stream_channels, n)``; return the number of model-rate samples."""
        if data.shape[1] == 0:
            return 0
        raw = self.channels.match.take(data)  # a copy (fancy indexing)
        # no data or bad data: zeros keep NaNs of a bad sensor out of the filters and the repair
        raw[self._absent_rows] = 0.0
        out, out_ts = self.preprocessor.process(raw, timestamps)
        if out.shape[1]:
            self.channels.repair.apply(out)
            self.buffer.write(out, out_ts)
        return out.shape[1]

    def push_marker(self, timestamp: float, value: str) -> bool:
        """Queue a stimulus marker for an event-locked window; other markers are counted and ignored."""
        if self.mode != "event":
            return False
        event = parse_stimulus_marker(value)
        if event is None:
            self.stats.ignored_markers += 1
            return False
        end = timestamp + self.spec.tmax
        self._events.append(
            _PendingEvent(timestamp, str(value), event.image_id, event.split, deadline=end + self.max_wait_s)
        )
        self.stats.pending_events = len(self._events)
        return True

    # --------------------------------------------------------------------------------------- outputs
    def ready(self, now: float | None = None) -> list[ReadyWindow]:
        """Windows whose data are complete. ``now`` (LSL time) lets late event windows expire."""
        windows = self._ready_events(now) if self.mode == "event" else self._ready_sliding()
        self.stats.windows += len(windows)
        return windows

    def _ready_events(self, now: float | None) -> list[ReadyWindow]:
        out: list[ReadyWindow] = []
        if not self._events:
            return out
        newest = self.buffer.last_timestamp
        keep: collections.deque[_PendingEvent] = collections.deque()
        data = ts = None
        for ev in self._events:
            if newest is None or newest < ev.onset + self.spec.tmax - 1.5 / self.spec.sfreq:
                if now is not None and now > ev.deadline:
                    self.stats.dropped_late += 1
                else:
                    keep.append(ev)
                continue
            if data is None:
                data, ts = self.buffer.read_last(self.buffer.capacity)
            win = cut_window(data, ts, ev.onset, self.spec, self.baseline)
            if win.status is WindowStatus.OK:
                out.append(
                    ReadyWindow(win.data, win.t_last, "event", ev.value, ev.image_id, ev.split, ev.onset)
                )
            elif win.status is WindowStatus.LATE and not (now is not None and now > ev.deadline):
                keep.append(ev)
            elif win.status is WindowStatus.NAN:
                self.stats.dropped_nan += 1
            elif win.status is WindowStatus.LATE:
                self.stats.dropped_late += 1
            else:
                self.stats.dropped_missing += 1
        self._events = keep
        self.stats.pending_events = len(keep)
        return out

    def _ready_sliding(self) -> list[ReadyWindow]:
        n = self.spec.n_times
        written = self.buffer.n_written
        ends = sliding_window_ends(self._next_sliding, written, n, self.stride)
        self._next_sliding = written
        out: list[ReadyWindow] = []
        if not ends.size:
            return out
        # only the newest window matters live; older ones (a burst after a stall) are counted as late
        self.stats.dropped_late += int(ends.size - 1)
        e = int(ends[-1])
        res = self.buffer.read_since(e - n + 1, max_samples=n)
        if res.n_overwritten or res.data.shape[1] != n:
            self.stats.dropped_missing += 1
            return out
        steps = np.diff(res.timestamps)
        period = 1.0 / self.spec.sfreq
        if steps.size and np.max(np.abs(steps - period)) > 0.5 * period:
            self.stats.dropped_missing += 1
        elif not np.all(np.isfinite(res.data)):
            self.stats.dropped_nan += 1
        else:
            out.append(ReadyWindow(np.ascontiguousarray(res.data), float(res.timestamps[-1]), "sliding"))
        return out
