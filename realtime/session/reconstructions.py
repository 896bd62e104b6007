"""Keep every reconstruction of a window with a known stimulus in the run folder.

For each ``image`` message whose window a stimulus marker named (``image_id``), the keeper writes
``reconstructions/<seq>-generated.png`` (the generator's pixels; ``seq`` is the image message's bus sequence
number, which the session XDF's ``bus`` stream records too), ``<seq>-seen.png`` (the stimulus from the
gallery) and a row of ``index.csv`` (seq, event, image_id, t_sample, t_image, skipped). It runs inside the
recorder node, so a session keeps them whenever it records.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.realtime.bus.consumer import BusConsumer

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ("seq", "event", "image_id", "t_sample", "t_image", "skipped")


class ReconstructionKeeper(BusConsumer):
    """Subscribe to ``image`` and write reconstructions beside the stimuli they reconstruct.

    Parameters
    ----------
    out_dir : path
        The ``reconstructions/`` folder (created).
    gallery : Gallery | path | "demo" | None
        Where the seen images come from (None: only the generated images are written).
    endpoint : str | None
        Bus subscriber endpoint (default: the broker's).
    subscriber_kwargs
        Passed to :class:`brainstream.realtime.bus.Subscriber` (``keys``, ``context``).
    """

    def __init__(
        self, out_dir: str | Path, gallery: Any = None, endpoint: str | None = None, **subscriber_kwargs
    ):
        super().__init__(endpoint, ("image",), **subscriber_kwargs)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if gallery is not None:
            from brainstream.realtime.services.retrieval_node import resolve_gallery

            gallery = resolve_gallery(gallery)
        self.gallery = gallery
        self._index = self.out_dir / "index.csv"
        if not self._index.exists():
            self._index.write_text(",".join(INDEX_COLUMNS) + "\n", encoding="utf-8")
        self.n_kept = 0

    thread_name = "reconstruction-keeper"

    def handle(self, msg) -> None:
        self.keep(msg)

    def keep(self, msg) -> bool:
        """Write one ``image`` message's reconstruction (False when its window named no stimulus)."""
        from PIL import Image

        image_id = msg.header.get("image_id")
        if msg.topic != "image" or image_id is None or len(msg.arrays) != 1:
            return False
        pixels = np.asarray(msg.arrays[0])
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            self.n_skipped += 1
            logger.warning(
                "image message %d: expected (H, W, 3) uint8, got %s %s", msg.seq, pixels.shape, pixels.dtype
            )
            return False
        stem = f"{msg.seq:06d}"
        Image.fromarray(pixels).save(self.out_dir / f"{stem}-generated.png")
        if self.gallery is not None and image_id in self.gallery:
            Image.fromarray(self.gallery.load_image(image_id)).save(self.out_dir / f"{stem}-seen.png")
        trace = dict((str(s), t) for s, t in msg.trace)
        row = [msg.seq, msg.header.get("event") or "", image_id, msg.t_sample, trace.get("generator", ""),
               msg.header.get("skipped", 0)]  # fmt: skip
        with self._index.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(row)
        self.n_kept += 1
        return True
