"""Record the decoder's own outputs from the bus into the session's XDF recording.

Each subscribed message becomes one sample of a one-channel string stream ``bus`` holding the message's
header as JSON (topic, seq, src, t_sample, trace, space and extras such as ``event``, ``ids``, scores);
``embedding.<subject>`` messages also become samples of a numeric stream ``bus:embedding.<subject>``
(float32, one channel per dimension), so embeddings load as arrays; ``image`` messages carry their
pixels in the JSON as a base64 PNG (``png``), so a recording can be re-scored later. Samples are stamped
with the message's ``t_sample`` (the LSL time of the data it describes), or the receive time when it has
none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pylsl

from brainstream.realtime.bus.consumer import BusConsumer
from brainstream.realtime.recording.recorder import LocalStream, Recorder
from brainstream.realtime.recording.xdf_writer import StreamHeader

logger = logging.getLogger(__name__)

DEFAULT_TOPICS = ("embedding.", "retrieval", "marker", "image", "session.")


class BusRecorder(BusConsumer):
    """Subscribe to bus topics and push what arrives into a running :class:`Recorder`.

    Parameters
    ----------
    recorder : Recorder
        A started recorder.
    endpoint : str | None
        Subscriber endpoint (default: the broker's XPUB, ``realtime.bus.DEFAULT_SUB_ENDPOINT``).
    topics : sequence of str
        Topic prefixes to record. ``signal.`` previews are better recorded from LSL at full rate.
    subscriber_kwargs
        Passed to :class:`realtime.bus.Subscriber` (``keys``, ``context`` for ``inproc://``...).
    """

    def __init__(
        self,
        recorder: Recorder,
        endpoint: str | None = None,
        topics: Sequence[str] = DEFAULT_TOPICS,
        **subscriber_kwargs: Any,
    ) -> None:
        super().__init__(endpoint, topics, **subscriber_kwargs)
        self.recorder = recorder
        self._log = recorder.add_local_stream(
            StreamHeader.local("bus", "BusMessages", ["message"], 0.0, channel_format="string")
        )
        self._arrays: dict[str, LocalStream] = {}
        self.n_messages = 0

    thread_name = "bus-recorder"

    def handle(self, msg) -> None:
        self.record(msg)

    def record(self, msg) -> None:
        """Record one :class:`realtime.bus.BusMessage` (also usable without the thread)."""
        t = msg.t_sample if msg.t_sample is not None else pylsl.local_clock()
        if msg.topic.startswith("session."):  # a supervisor's event: into the session-events stream
            extras = msg.extras
            self.recorder.event(
                str(extras.get("kind", "event")), str(extras.get("message", "")), t,
                source=msg.src.rsplit(":", 1)[0], node=extras.get("node"),
            )  # fmt: skip
            self.n_messages += 1
            return
        entry = {"topic": msg.topic, **msg.header}
        entry["arrays"] = [{"dtype": str(a.dtype), "shape": list(a.shape)} for a in msg.arrays]
        entry.pop("frames", None)
        if msg.topic == "image" and len(msg.arrays) == 1:
            entry["png"] = _png_base64(msg.arrays[0])
        self._log.push([json.dumps(entry, default=_jsonable, ensure_ascii=False)], [t])
        if msg.topic.startswith("embedding.") and msg.arrays:
            emb = np.asarray(msg.arrays[0], dtype=np.float32).reshape(-1)
            stream = self._arrays.get(msg.topic)
            if stream is None:
                header = StreamHeader.local(
                    f"bus:{msg.topic}", "Embedding", [f"d{i}" for i in range(emb.size)], 0.0,
                    source_id=f"bus:{msg.topic}:{msg.space or ''}",
                )  # fmt: skip
                stream = self._arrays[msg.topic] = self.recorder.add_local_stream(header)
            if stream.header.channel_count != emb.size:
                self.n_skipped += 1
                logger.warning("%s changed dimension (%d -> %d); not recorded", msg.topic,
                               stream.header.channel_count, emb.size)  # fmt: skip
            else:
                stream.push(emb[:, None], [t])
        self.n_messages += 1


def _png_base64(pixels: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as base64 PNG text (lossless, a few kB at the demo's 64 px)."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)
