"""Retrieval node: ``embedding.<subject>`` in, ``retrieval`` (top-k gallery images) out."""

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


def resolve_gallery(gallery: Any):
    """A ``Gallery`` from a Gallery, a folder, or ``"demo"`` (the cached demo gallery)."""
    from brainstream.models.gallery import Gallery

    if isinstance(gallery, Gallery):
        return gallery
    if str(gallery) == "demo":
        from brainstream.models.demo_gallery import default_gallery_dir

        gallery = default_gallery_dir()
    return Gallery.load(Path(gallery))


class RetrievalNode(ServiceNode):
    """Answer every embedding with its top-k gallery images.

    Parameters
    ----------
    gallery : Gallery | path | "demo"
        The images to retrieve from, in one embedding space.
    k : int
        Number of images per answer.
    backend : str
        ``exact`` (one matrix product) | ``faiss-ivf`` | ``faiss-hnsw``.
    dtype : str
        ``float32`` or ``float16`` storage for exact search.
    index_options : dict | None
        ``nlist``, ``nprobe``, ``target_recall``, ``validation_queries`` of
        :class:`~brainstream.models.retrieval.Retriever` (faiss-ivf).
    sub_endpoint, pub_endpoint, keys, heartbeat_interval, context
        Bus settings (see :class:`realtime.bus.Subscriber` / :class:`realtime.bus.Publisher`).

    Notes
    -----
    An embedding in another space than the gallery's is refused: dropped, counted (``space_mismatch``) and
    raised as an alarm on ``status.retrieval`` naming both spaces. ``rank_of_true`` is the rank of the shown
    image among ALL gallery images when the embedding names an ``image_id`` the gallery holds; with
    ``test_images`` (the session's test images), ``test_rank`` is its rank among those (``n_test``-way, as
    papers report retrieval) when it is one of them.
    """

    name = "retrieval"
    topics = ("embedding.",)

    def __init__(
        self,
        gallery: Any,
        *,
        k: int = 5,
        backend: str = "exact",
        dtype: str = "float32",
        test_images: list[str] | None = None,
        index_options: dict[str, Any] | None = None,
        **bus: Any,
    ) -> None:
        super().__init__(**bus)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        from brainstream.models.retrieval import Retriever

        self.retriever = Retriever(
            resolve_gallery(gallery), backend=backend, dtype=dtype, k=k, **(index_options or {})
        )
        self.space = self.retriever.space
        self.k = min(k, len(self.retriever.ids))
        self.test_images = list(test_images or [])
        missing = [i for i in self.test_images if i not in self.retriever.gallery]
        if missing:
            raise ValueError(f"{len(missing)} test images are not in the gallery (e.g. {missing[:3]})")
        self.counts = {"embeddings": 0, "published": 0, "space_mismatch": 0, "bad_payload": 0}

    def _setup(self) -> None:
        # one query at a time, on one thread, as FAISS searches (models/retrieval.py): the exact search's
        # product over a large gallery would otherwise leave an OpenBLAS worker spinning between queries
        self.limit_blas(1)

    def _step(self, subscriber: Subscriber, publisher: Publisher) -> None:
        msg = subscriber.recv(timeout=RECV_TIMEOUT_S)
        if msg is not None:
            self.handle(msg, publisher)

    def handle(self, msg: BusMessage, publisher: Publisher) -> bool:
        """Answer one embedding message; False (and counted) when it was refused."""
        t_start = local_clock()
        self.count("embeddings")
        if msg.space != self.space:
            self.count("space_mismatch")
            self.alarm(
                f"embedding space mismatch: gallery in {self.space!r}, {msg.topic} in {msg.space!r}; "
                "use a gallery built with the encoder's embedder"
            )
            return False
        dim = self.retriever.index.dim
        if len(msg.arrays) != 1 or msg.arrays[0].shape != (dim,) or msg.arrays[0].dtype != np.float32:
            self.count("bad_payload")
            shapes = [(a.dtype.str, a.shape) for a in msg.arrays]
            self.alarm(f"{msg.topic}: expected one float32 ({dim},) embedding, got {shapes}")
            return False
        true_id = msg.get("image_id")
        true_id = true_id if isinstance(true_id, str) else None
        try:
            result = self.retriever.search(msg.arrays[0], self.k, true_id=true_id)
        except ValueError as exc:  # NaN / Inf in the embedding
            self.count("bad_payload")
            self.alarm(f"{msg.topic}: {exc}")
            return False
        test_rank = None
        if true_id is not None and true_id in self.test_images:
            test_rank = self.retriever.rank_among(msg.arrays[0], true_id, self.test_images)
        publisher.publish(
            "retrieval",
            [result.scores],
            t_sample=msg.t_sample,
            trace=msg.trace,
            space=self.space,
            stage="retrieval",
            ids=result.ids,
            paths=result.paths,
            true_image_id=true_id,
            rank_of_true=result.rank_of_true,
            test_rank=test_rank,
            n_test=len(self.test_images) or None,
            event=msg.get("event"),
            source_topic=msg.topic,
        )
        self.count("published")
        self.record_latency(msg.t_sample, t_start, msg.get("host"))
        return True

    def _status_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"gallery_size": len(self.retriever.ids), "k": self.k}
        nprobe = getattr(self.retriever.index, "nprobe", None)
        if nprobe is not None:
            stats["nprobe"] = nprobe
        if self.retriever.tuning is not None:
            stats["validation_recall"] = round(self.retriever.tuning["recall"], 4)
        return stats
