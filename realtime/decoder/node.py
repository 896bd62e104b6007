"""The decoder node: acquisition → causal preprocessing → windows → encoder → ``embedding.<subject>``.

Threads: the :class:`~realtime.acquisition.StreamReader` pulls LSL into a ring buffer; the node's loop
sleeps on that buffer, feeds new samples and markers to the :class:`OnlineWindower`, encodes each ready
window at batch size 1 and publishes it at once (docs/architecture.md §3-4). A ``signal.<stream>``
preview and a
``status.decoder`` message go out a few times per second for the display.

Sliding windows of a causal checkpoint run incrementally by default (``windowing.incremental``): the
preprocessed samples stream into an :class:`~models.incremental.IncrementalEncoder` as they arrive and each
stride's embedding is read when the window's last sample has gone in (:mod:`realtime.decoder.incremental`);
the messages are the same.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pylsl

from brainstream.models.channels import ChannelPlan, match_channels, plan_channels, repair_method_for
from brainstream.models.preprocessing import PreprocessingConfig, RobustScaler
from brainstream.models.windowing import WindowSpec
from brainstream.realtime.decoder.incremental import EncodedWindow, IncrementalSliding
from brainstream.realtime.decoder.online import OnlineWindower, ReadyWindow

logger = logging.getLogger(__name__)


@dataclass
class LatencyLog:
    """Recent per-window latencies (ms), kept bounded."""

    maxlen: int = 10_000
    push_to_embedding: list[float] = field(default_factory=list)
    encoder: list[float] = field(default_factory=list)

    def add(self, total_ms: float, encoder_ms: float) -> None:
        self.push_to_embedding.append(total_ms)
        self.encoder.append(encoder_ms)
        if len(self.push_to_embedding) > self.maxlen:
            del self.push_to_embedding[: self.maxlen // 2]
            del self.encoder[: self.maxlen // 2]

    def summary(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            return float(np.percentile(values, q)) if values else float("nan")

        return {
            "p50_ms": pct(self.push_to_embedding, 50),
            "p99_ms": pct(self.push_to_embedding, 99),
            "encoder_p50_ms": pct(self.encoder, 50),
            "encoder_p99_ms": pct(self.encoder, 99),
        }


class DecoderNode:
    """Run one decoder over a live LSL stream and publish embeddings on the bus.

    Parameters
    ----------
    reader : StreamReader
        Connected signal reader (the node starts and stops it).
    runtime : EncoderRuntime | None
        The encoder, ready to run (None with ``incremental``).
    meta : CheckpointMeta
        The checkpoint's metadata: channels, model rate, window, preprocessing, scaler, space.
    publisher : realtime.bus.Publisher
        Where embeddings, previews and status go.
    subject : str
        Used in the topic ``embedding.<subject>``.
    markers : MarkerReader | None
        Stimulus markers for event-locked windows (required in event mode).
    mode : {"event", "sliding"}
    stride_s, max_wait_s : float
        See :class:`OnlineWindower`.
    scaler : RobustScaler | None
        Overrides the checkpoint's scaler (a subject profile's statistics).
    subject_index : int
        Subject layer of a multi-subject encoder.
    preview_rate : float
        Rate of the ``signal.*`` preview (Hz); ``preview_channels`` channels at most.
    incremental : IncrementalEncoder | None
        Sliding mode only: compute the windows incrementally with this encoder (built from the same causal
        checkpoint, its subject layer chosen) instead of running ``runtime`` on each whole window.
    channels : ChannelPlan | None
        How the encoder's channels come from the stream (missing / bad sensors and their repair; the
        encoder must already mask what the plan masks). None: every channel must be in the stream.
    control : Subscriber | None
        ``control.decoder`` requests (e.g. from the display's bad-sensor key): ``action: mark_bad`` with
        ``channels: [...]`` runs :meth:`mark_bad`.
    encoder_factory : callable | None
        ``factory(plan) -> (runtime, incremental)``: the encoder rebuilt with ``plan``'s sensors masked; lets
        :meth:`mark_bad` mask a brain module live (not needed for interpolating encoders).
    """

    stage = "decoder"

    def __init__(
        self,
        reader,
        runtime,
        meta,
        publisher,
        subject: str = "anonymous",
        markers=None,
        mode: str = "event",
        stride_s: float = 0.05,
        max_wait_s: float = 2.0,
        scaler: RobustScaler | None = None,
        subject_index: int = 0,
        preview_rate: float = 60.0,
        preview_channels: int = 32,
        status_period: float = 0.5,
        incremental=None,
        channels: ChannelPlan | None = None,
        control=None,
        encoder_factory=None,
    ) -> None:
        if incremental is not None and mode != "sliding":
            raise ValueError(
                "incremental decoding applies to sliding windows; event-locked windows are whole"
            )
        if runtime is None and incremental is None:
            raise ValueError("the decoder node needs an encoder runtime (or an incremental encoder)")
        if mode == "event" and markers is None:
            raise ValueError(
                "event-locked decoding needs a marker stream; configure input.markers or use "
                "windowing.mode: sliding"
            )
        self.reader, self.runtime, self.meta, self.publisher = reader, runtime, meta, publisher
        self.markers = markers
        self.subject = subject
        self.topic = f"embedding.{subject}"
        self.mode = mode
        self.stride_s, self.max_wait_s = stride_s, max_wait_s
        self.scaler = scaler
        self.incremental = incremental
        self.channels = channels
        self.control = control
        self.encoder_factory = encoder_factory
        self.sliding: IncrementalSliding | None = None
        with_subject = getattr(getattr(runtime, "signature", None), "with_subject", False)
        self.subject_index = subject_index if with_subject else None
        self.preview_rate, self.preview_channels = preview_rate, preview_channels
        self.status_period = status_period
        self.latency = LatencyLog()
        self.dropped_samples = 0
        self.windower: OnlineWindower | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._marker_queue = None
        self._prepared = False
        # a promoted standby: what its predecessor already published is not published again
        self.published_until: float | None = None  # t_event of the last event window published before
        self.markers_until: float | None = None  # timestamp of the last marker published before
        self.history_s = 0.0  # seconds of buffered signal the loop starts from (a standby's, else 0)
        self.error: BaseException | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def prepare(self) -> DecoderNode:
        """Warm the runtime and start reading (a standby: the ring buffer fills, nothing is decoded yet)."""
        if self._prepared:
            return self
        # first: a compiling runtime takes seconds, during which a started reader would pile up a backlog
        if self.incremental is not None:
            for _ in range(3):  # allocate the session's buffers; IncrementalSliding resets the state
                self.incremental.push(np.zeros((self.incremental.n_channels, 6), np.float32))
        else:
            self.runtime.warmup()
        self.reader.start()
        if self.markers is not None:
            self._marker_queue = self.markers.subscribe()
            self.markers.start()
        self._prepared = True
        return self

    def start(self) -> DecoderNode:
        """Connect the readers (unless :meth:`prepare` did), build the windower against the stream's real
        channels and start the loop (from ``history_s`` seconds back in the buffer)."""
        self.prepare()
        self.windower = self._build_windower()
        if self.incremental is not None:
            self.sliding = IncrementalSliding(self.windower, self.incremental)
        self._thread = threading.Thread(target=self._loop, name="decoder", daemon=True)
        self._thread.start()
        logger.info(
            "decoder running: %s, %s windows, runtime %s", self.reader.name, self.mode, self.runtime_name
        )
        return self

    @property
    def runtime_name(self) -> str:
        if self.incremental is not None:
            return f"incremental ({self.incremental.backend})"
        return self.runtime.name

    def request_stop(self) -> None:
        """Ask the loop to end (safe from a signal handler: only sets an event); :meth:`wait` returns."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.markers is not None:
            self.markers.stop()
        if self.control is not None:
            self.control.close()
        self.reader.stop()

    def wait(self, seconds: float | None = None) -> None:
        """Block for ``seconds`` (or until stopped); re-raise an error of the loop thread."""
        self._stop.wait(seconds)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> DecoderNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------- setup
    def _build_windower(self) -> OnlineWindower:
        meta = self.meta
        scaler = self.scaler
        if scaler is None and meta.scaler is not None:
            scaler = RobustScaler.from_dict(meta.scaler)
        preprocessing = PreprocessingConfig(**(meta.preprocessing or {}))
        return OnlineWindower(
            self.reader.ch_names,
            self.reader.sfreq,
            meta.ch_names,
            preprocessing,
            WindowSpec(meta.tmin, meta.tmax, meta.sfreq),
            mode=self.mode,
            scaler=scaler,
            stride_s=self.stride_s,
            max_wait_s=self.max_wait_s,
            channels=self.channels,
        )

    # ----------------------------------------------------------------------------------------------- loop
    def _loop(self) -> None:
        try:
            self._run_loop()
        except BaseException as exc:  # surfaced by wait(); the node must not die silently
            logger.exception("decoder loop failed")
            self.error = exc
            self._stop.set()

    def _run_loop(self) -> None:
        buffer = self.reader.buffer
        history = min(buffer.capacity // 2, int(self.history_s * self.reader.sfreq))
        cursor = max(0, buffer.n_written - history)
        preview_cursor = self.windower.buffer.n_written
        next_preview = next_status = pylsl.local_clock()
        while not self._stop.is_set():
            buffer.wait(cursor, timeout=0.02)
            res = buffer.read_since(cursor)
            cursor = res.cursor
            self.dropped_samples += res.n_overwritten
            self._drain_markers()
            self._drain_control()
            if res.data.shape[1]:
                self.windower.push_samples(res.data, res.timestamps)
            if self.sliding is not None:
                for done in self.sliding.ready():
                    self._publish_incremental(done)
            else:
                for window in self.windower.ready(now=pylsl.local_clock()):
                    self._encode_and_publish(window)
            now = pylsl.local_clock()
            if now >= next_preview:
                preview_cursor = self._publish_preview(preview_cursor)
                next_preview = now + 1.0 / 20
            if now >= next_status:
                self._publish_status()
                next_status = now + self.status_period

    def _drain_markers(self) -> None:
        if self._marker_queue is None:
            return
        for event in self._marker_queue.drain():
            if self.published_until is not None and event.timestamp <= self.published_until + 1e-3:
                continue  # the decoder before this one cut its window and published it
            value = str(event.value)
            self.windower.push_marker(event.timestamp, value)
            if self.markers_until is not None and event.timestamp <= self.markers_until + 1e-3:
                # relayed by the decoder before this one, which may have died before its window was
                # complete: cut here, not relayed twice
                continue
            self.publisher.publish(
                "marker", t_sample=event.timestamp, value=value, trace=[["marker", pylsl.local_clock()]]
            )

    def _drain_control(self) -> None:
        if self.control is None:
            return
        for msg in self.control.drain(timeout=0):
            if msg.get("action") == "mark_bad":
                channels = [str(c) for c in (msg.get("channels") or [])]
                try:
                    self.mark_bad(channels)
                except ValueError as exc:  # unknown sensors, or too few left: the decoder runs on as it was
                    logger.warning("not marking %s bad: %s", channels, exc)
            else:
                logger.warning("ignoring control.decoder request %r", msg.get("action"))

    def mark_bad(self, names: list[str]) -> None:
        """Leave out the sensors ``names`` from now on (the plan's repair: a brain module is masked and its
        runtime rebuilt, other encoders interpolate them). Call from the loop thread or before start()."""
        plan = self.windower.channels
        unknown = match_channels(plan.match.wanted, names, max_missing=1.0).missing
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not among the encoder's {len(plan.match.wanted)} sensors"
            )
        new = plan.with_bad(names)
        added = [c for c in new.absent if c not in set(plan.absent)]
        if not added:
            logger.info("sensors %s are already left out", names)
            return
        if new.repair.method == "mask":
            if self.encoder_factory is None:
                raise ValueError("masking sensors live needs the node's encoder_factory (build_decoder_node)")
            runtime, incremental = self.encoder_factory(new)
            if incremental is not None:
                self.incremental = incremental
                self.sliding = IncrementalSliding(self.windower, incremental)
            else:
                self.runtime = runtime
        self.windower.set_channels(new)
        self.channels = new
        done = "masked in the spatial attention" if new.repair.method == "mask" else "interpolated"
        logger.warning(
            "marked bad live: %s (%s); %d sensors left out", ", ".join(added), done, len(new.absent)
        )

    def _encode_and_publish(self, window: ReadyWindow) -> None:
        if (
            self.published_until is not None
            and window.t_event is not None
            and window.t_event <= self.published_until + 1e-3
        ):
            return  # published by the decoder this one took over from
        t_ready = pylsl.local_clock()
        emb = self.runtime.run(window.data[None], subject=self.subject_index)[0]
        t_encoded = pylsl.local_clock()
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        trace = [["decoder.window", t_ready], ["decoder.encoded", t_encoded]]
        self.publisher.publish(
            self.topic,
            [emb],
            t_sample=window.t_sample,
            trace=trace,
            space=self.meta.space,
            stage=self.stage,
            event=window.event,
            image_id=window.image_id,
            split=window.split,
            window=window.kind,
            t_event=window.t_event,
        )
        t_published = pylsl.local_clock()
        self.latency.add((t_published - window.t_sample) * 1e3, (t_encoded - t_ready) * 1e3)

    def _publish_incremental(self, done: EncodedWindow) -> None:
        """The same message as :meth:`_encode_and_publish` for a sliding window computed incrementally."""
        trace = [["decoder.window", done.t_ready], ["decoder.encoded", done.t_encoded]]
        self.publisher.publish(
            self.topic,
            [np.ascontiguousarray(done.embedding, dtype=np.float32)],
            t_sample=done.t_sample,
            trace=trace,
            space=self.meta.space,
            stage=self.stage,
            event=None,
            image_id=None,
            split=None,
            window="sliding",
        )
        t_published = pylsl.local_clock()
        self.latency.add((t_published - done.t_sample) * 1e3, (done.t_encoded - done.t_ready) * 1e3)

    def _publish_preview(self, cursor: int) -> int:
        buf = self.windower.buffer
        res = buf.read_since(max(cursor, buf.n_written - buf.capacity))
        if res.data.shape[1] == 0:
            return res.cursor
        step = max(1, int(round(self.meta.sfreq / self.preview_rate)))
        first = (-cursor) % step  # keep the decimation grid fixed across calls
        data = np.ascontiguousarray(res.data[: self.preview_channels, first::step])
        ts = np.ascontiguousarray(res.timestamps[first::step])
        if ts.size:
            self.publisher.publish(
                f"signal.{self.reader.name}",
                [data, ts],
                t_sample=float(ts[-1]),
                ch_names=self.meta.ch_names[: self.preview_channels],
                sfreq=self.meta.sfreq / step,
            )
        return res.cursor

    def status(self) -> dict:
        stats = {
            **self.windower.stats.as_dict(),
            **self.latency.summary(),
            "dropped_samples": self.dropped_samples,
            "incremental": self.sliding is not None,
            **self.windower.channels.counts(),
        }
        if self.sliding is not None:
            stats["incremental_resets"] = self.sliding.resets
        reader_stats = getattr(self.reader, "stats", None)
        if reader_stats is not None and hasattr(reader_stats, "as_dict"):
            stats.update({f"stream_{k}": v for k, v in reader_stats.as_dict().items()})
        return stats

    def _publish_status(self) -> None:
        alarms = list(getattr(self.reader, "alarms", []) or [])
        alarms += list(getattr(self.publisher, "alarms", []) or [])  # bus unreachable: told once it is back
        stats = {
            k: (float(v) if isinstance(v, float | np.floating) else v)
            for k, v in self.status().items()
            if isinstance(v, int | float | np.number)
        }
        self.publisher.publish(f"status.{self.stage}", state="running", alarms=alarms, stats=stats)


def build_decoder_node(
    config,
    base_dir: Path | None = None,
    publisher=None,
    checkpoint: str | Path | None = None,
    scaler: RobustScaler | None = None,
    control=None,
    control_endpoint: str | bool | None = None,
) -> DecoderNode:
    """Build a :class:`DecoderNode` from a :class:`~realtime.pipeline_config.PipelineConfig`.

    The node listens for ``control.decoder`` requests on ``control`` (a Subscriber), else on
    ``control_endpoint`` (default: the pipeline's ``bus.sub``; False: no control)."""
    from brainstream.models.checkpoint import load_checkpoint
    from brainstream.models.device_profile import load_device_profile
    from brainstream.models.runtime import create_runtime
    from brainstream.realtime.acquisition import MarkerReader, StreamReader
    from brainstream.realtime.bus import Publisher

    base_dir = Path(base_dir or ".")
    profile = load_device_profile(config.input.device)
    flags = [
        f for f, on in (("clocksync", config.input.clocksync), ("dejitter", config.input.dejitter)) if on
    ]
    sel = config.input.signal
    reader = StreamReader(
        sel.name,
        sel.type,
        sel.source_id,
        profile=profile,
        buffer_seconds=config.input.buffer_s,
        processing_flags=flags,
        timeout=sel.timeout_s,
        max_missing=config.input.max_missing_fraction,
    )
    markers = None
    if config.input.markers is not None and config.windowing.mode == "event":
        m = config.input.markers
        markers = MarkerReader(m.name, m.type, m.source_id, timeout=m.timeout_s)
    if checkpoint:
        ckpt = Path(checkpoint)
    elif config.encoder.checkpoint in ("demo", "demo-causal"):  # the shipped demo encoders
        from brainstream.realtime.session.demo_assets import ensure_demo_assets

        ckpt = ensure_demo_assets(encoder=config.encoder.checkpoint).checkpoint_dir
    else:
        ckpt = config.resolve_path(config.encoder.checkpoint, base_dir)
    model, meta = load_checkpoint(ckpt)
    # the stream's channels decide which sensors the encoder runs without, so connect before building it
    reader.connect()
    method = repair_method_for(meta.arch)
    try:
        channels = plan_channels(
            reader.ch_names,
            meta.ch_names,
            method,
            bad=[*profile.bad_channels, *config.input.bad_channels],
            positions=model_positions(meta, profile) if method == "interpolate" else None,
            max_missing=config.input.max_missing_fraction,
            source=f"stream '{reader.name}'",
        )
    except ValueError:
        reader.stop()
        raise
    channels.warn(logger, source=f"stream '{reader.name}'")
    enc = config.encoder
    incremental_on = use_incremental(config.windowing, enc.runtime, meta, ckpt)

    def encoder_factory(plan: ChannelPlan):
        """``(runtime, incremental)`` of the checkpoint with ``plan``'s absent sensors masked."""
        if plan.absent and plan.repair.method == "mask":
            model.mask_sensors(plan.repair.rows)
        if incremental_on:
            return None, incremental_from_model(
                model, meta, enc.runtime, enc.subject_index, precision=enc.precision
            )
        runtime = create_runtime(
            model,
            enc.runtime,
            subject=enc.subject_index,
            precision=enc.precision,
            onnx_path=Path(ckpt) / "model.onnx",
        )
        return runtime, None

    runtime, incremental = encoder_factory(channels)
    if publisher is None:
        publisher = Publisher(config.bus.pub, name="decoder", keys=config.bus.keys_dir)
    if control is None and control_endpoint is not False:
        from brainstream.realtime.bus import DECODER_CONTROL_TOPIC, Subscriber

        control = Subscriber(
            control_endpoint or config.bus.sub, topics=(DECODER_CONTROL_TOPIC,), keys=config.bus.keys_dir
        )
    return DecoderNode(
        reader,
        runtime,
        meta,
        publisher,
        subject=config.subject,
        markers=markers,
        mode=config.windowing.mode,
        stride_s=config.windowing.stride_s,
        max_wait_s=config.windowing.max_wait_s,
        scaler=scaler,
        subject_index=config.encoder.subject_index,
        preview_rate=config.preview.rate_hz,
        preview_channels=config.preview.max_channels,
        incremental=incremental,
        channels=channels,
        control=control,
        encoder_factory=encoder_factory,
    )


def model_positions(meta, profile) -> np.ndarray | None:
    """Positions of the checkpoint's sensors for interpolation: the device profile's (3-D when it has them)
    when it has every one of them, else the checkpoint's own 2-D positions, else None."""
    if profile is not None and profile.has_positions:
        match = match_channels(profile.channels, meta.ch_names, max_missing=1.0)
        if not match.missing:
            try:
                return profile.sensor_positions()[match.index]
            except ValueError as exc:  # a layout that lacks some names: fall back to the checkpoint's
                logger.info("no sensor positions from device profile %s: %s", profile.name, exc)
    return None if meta.positions is None else np.asarray(meta.positions, dtype=np.float64)


INCREMENTAL_RUNTIMES = ("auto", "torch", "onnxruntime")


def use_incremental(windowing, runtime: str, meta, where: str | Path = "the checkpoint") -> bool:
    """Whether sliding windows are computed incrementally (``windowing.incremental``; None: exactly when the
    checkpoint is causal and the runtime can run the incremental step). Raises when asked for and impossible.
    """
    asked = windowing.incremental
    if windowing.mode != "sliding" or asked is False:
        return False
    possible = meta.causal and runtime in INCREMENTAL_RUNTIMES
    if asked is None:
        if meta.causal and not possible:
            logger.info("causal checkpoint on runtime %s: whole windows (incremental runs on CPU)", runtime)
        return possible
    if not meta.causal:
        raise ValueError(
            f"windowing.incremental: true needs a causal checkpoint (trained with model.causal: true); "
            f"{where} is not causal: set incremental: false or train a causal model"
        )
    if runtime not in INCREMENTAL_RUNTIMES:
        raise ValueError(
            f"incremental decoding runs on encoder.runtime torch or onnxruntime (or auto), not {runtime!r}; "
            "change the runtime or set windowing.incremental: false"
        )
    return True


def incremental_encoder(
    checkpoint: str | Path,
    runtime: str = "auto",
    subject_index: int = 0,
    threads=None,
    precision: str | None = None,
):
    """``(IncrementalEncoder, CheckpointMeta)`` of a causal checkpoint (runtime torch, else ONNX Runtime)."""
    from brainstream.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    encoder = incremental_from_model(
        model, meta, runtime, subject_index, threads, precision, where=checkpoint
    )
    return encoder, meta


def incremental_from_model(
    model,
    meta,
    runtime: str = "auto",
    subject_index: int = 0,
    threads=None,
    precision: str | None = None,
    where: str | Path = "the checkpoint",
):
    """An :class:`~brainstream.models.incremental.IncrementalEncoder` of a loaded causal brain module (masked
    or not)."""
    from brainstream.models.incremental import IncrementalEncoder

    n_subjects = int(model.config.n_subjects)
    if subject_index >= n_subjects:
        raise ValueError(
            f"encoder.subject_index {subject_index} is out of range: {where} has {n_subjects} subject "
            f"layer(s) ({meta.subjects})"
        )
    backend = "torch" if runtime == "torch" else "onnxruntime"
    # one subject layer: None selects it as well (their mean), as the full path does
    subject = subject_index if n_subjects > 1 else None
    return IncrementalEncoder(
        model, subject=subject, backend=backend, threads=threads, precision=precision or "fp32"
    )
