"""Generator node: ``embedding.<subject>`` in, ``image`` out; when behind, only the newest is rendered."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pylsl import local_clock

from brainstream.realtime.bus import BusMessage, Publisher, Subscriber
from brainstream.realtime.services.base import ServiceNode

log = logging.getLogger(__name__)

RECV_TIMEOUT_S = 0.1


class GeneratorNode(ServiceNode):
    """Turn embeddings into images on the bus.

    Parameters
    ----------
    generator : Generator | GeneratorConfig | str | path
        A built generator, or a config (``"tiny"``, ``configs/generator/FILE.yaml``) built when the node
        starts (in its worker thread; ``start()`` returns once it is ready).
    sub_endpoint, pub_endpoint, keys, heartbeat_interval, context
        Bus settings (see :class:`realtime.bus.Subscriber` / :class:`realtime.bus.Publisher`).

    identify : tuple[list[str], numpy.ndarray] | None
        The session's test images (ids and gallery embeddings): each image generated for a window whose
        stimulus is one of them carries ``two_way``, its 2-way identification among them in the
        generator's space (:mod:`brainstream.models.reconstruction`; needs a weight-free embedder of that
        space: the demo's).

    Notes
    -----
    Rendering takes longer than embeddings arrive on a CPU; the node then drains the queue, renders only the
    newest embedding and reports how many it skipped (``skipped`` in each ``image`` message, the total in
    ``stats``), so the picture never lags further and further behind the brain.
    """

    name = "generator"
    topics = ("embedding.",)

    def __init__(
        self, generator: Any = "tiny", identify: tuple[list[str], np.ndarray] | None = None, **bus: Any
    ) -> None:
        super().__init__(**bus)
        self._identify = identify
        self._embedder = None
        from brainstream.models.generation import Generator

        self.generator: Generator | None = generator if isinstance(generator, Generator) else None
        self._generator_source = None if self.generator is not None else generator
        self.counts = {"embeddings": 0, "images": 0, "skipped": 0, "refused": 0}

    def _setup(self) -> None:
        if self.generator is None:
            from brainstream.models.generation import load_generator

            source = self._generator_source
            self.generator = load_generator(Path(source) if isinstance(source, Path) else source)
        threads = getattr(getattr(self.generator, "config", None), "cpu_threads", None)
        if str(getattr(self.generator, "device", "")) != "cpu":
            threads = None  # the budget is the CPU's
        if threads:
            import torch

            # the whole process, the 2-way embedder included: a torch pool wider than the cores left free
            # stalls at its barrier (p99 of one 64x64 embedding 54-165 ms on 2 threads, 6-10 ms on 1)
            torch.set_num_threads(threads)
        if self._identify is not None and str(self.generator.space).startswith("demo:"):
            from brainstream.models.embedders import get_embedder

            self._embedder = get_embedder("demo", dim=self.generator.dim)
        # compilation (minutes for SDXL with torch.compile) and lazy allocation happen here, before the node
        # reports ready, not on the first embedding of a live session
        self.generator.warmup()
        if self._embedder is not None:  # the 2-way score's embedder too: its first call builds its network
            self._embedder.embed([np.zeros((self.generator.height, self.generator.width, 3), np.uint8)])
        if threads:
            # the prior's nearest neighbour and the 2-way score; last, so every BLAS build loaded is covered
            self.limit_blas(threads)

    def _step(self, subscriber: Subscriber, publisher: Publisher) -> None:
        msg, skipped = subscriber.recv_latest(timeout=RECV_TIMEOUT_S)
        if msg is None:
            return
        self.count("embeddings", 1 + skipped)
        self.count("skipped", skipped)
        self.handle(msg, publisher, skipped)

    def handle(self, msg: BusMessage, publisher: Publisher, skipped: int = 0) -> bool:
        """Render one embedding message and publish the image; False (counted, alarmed) when refused."""
        from brainstream.models.generation import GeneratorError

        assert self.generator is not None
        t_start = local_clock()
        if len(msg.arrays) != 1 or msg.arrays[0].ndim != 1:
            self.count("refused")
            self.alarm(f"{msg.topic}: expected one (D,) float32 embedding, got {len(msg.arrays)} arrays")
            return False
        try:
            image = self.generator.generate(np.asarray(msg.arrays[0], dtype=np.float32), msg.space)
        except GeneratorError as exc:
            self.count("refused")
            self.alarm(f"{msg.topic}: {exc}")
            return False
        publisher.publish(
            "image",
            [image],
            two_way=self._two_way(image, msg.get("image_id")),
            t_sample=msg.t_sample,
            trace=msg.trace,
            space=msg.space,
            stage="generator",
            image_id=msg.get("image_id"),
            skipped=int(skipped),
            event=msg.get("event"),
        )
        self.count("images")
        self.record_latency(msg.t_sample, t_start, msg.get("host"))
        return True

    def _two_way(self, image: np.ndarray, image_id: Any) -> float | None:
        """2-way identification of one image among the test images, None when not one of them."""
        if self._embedder is None or self._identify is None or image_id not in self._identify[0]:
            return None
        from brainstream.models.reconstruction import two_way_scores

        ids, embeddings = self._identify
        row = ids.index(image_id)
        return float(two_way_scores(self._embedder.embed([image]), embeddings, np.array([row]))[0])

    def _status_stats(self) -> dict[str, Any]:
        if self.generator is None:
            return {}
        return {"height": self.generator.height, "width": self.generator.width}
