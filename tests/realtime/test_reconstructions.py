"""Reconstructions kept in the run folder and generated pixels in the session XDF, off a real ZeroMQ bus."""

from __future__ import annotations

import base64
import csv
import io
import json
import time

import numpy as np
from PIL import Image

from brainstream.models import xdf
from brainstream.models.embedders import get_embedder
from brainstream.models.gallery import Gallery
from brainstream.models.stimuli import procedural_images
from brainstream.realtime.recording import Recorder


def test_known_stimuli_are_kept_with_the_seen_image_and_pixels_go_into_the_xdf(tmp_path, unique_name):
    from brainstream.realtime.bus import Publisher
    from brainstream.realtime.recording.bus_recorder import BusRecorder
    from brainstream.realtime.session.reconstructions import INDEX_COLUMNS, ReconstructionKeeper

    ids, images = zip(*[(i, im) for i, im, _ in procedural_images(3, seed=1, size=32)], strict=True)
    gallery = Gallery.save(
        tmp_path / "gallery",
        embeddings=get_embedder("demo").embed(list(images)),
        ids=list(ids),
        space="demo:randconv-v1:128",
        embedder="demo",
        images=list(images),
        progress=False,
    )
    endpoint = f"inproc://{unique_name}"
    pub = Publisher(endpoint, name="generator", bind=True, heartbeat_interval=None)
    rec = Recorder(tmp_path / "session.xdf").start()
    out = tmp_path / "run" / "reconstructions"
    bus = BusRecorder(rec, endpoint, topics=("image",)).start()
    keeper = ReconstructionKeeper(out, gallery, endpoint).start()
    rng = np.random.default_rng(0)
    sent = {}
    try:
        deadline = time.monotonic() + 10
        k = 0
        while keeper.n_kept < 4 and time.monotonic() < deadline:  # PUB/SUB slow joiner: keep sending
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            known = k % 2 == 0  # sliding windows between markers name no stimulus: not kept
            image_id = ids[k % 3] if known else None
            pub.publish("image", [pixels], t_sample=50.0 + k, stage="generator", image_id=image_id,
                        event=f"test/{image_id}" if known else None, skipped=0)  # fmt: skip
            sent[k] = (pixels, image_id)
            k += 1
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        keeper.stop()
        bus.stop()
        rec.stop()
        pub.close()
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert tuple(rows[0].keys()) == INDEX_COLUMNS and len(rows) == keeper.n_kept >= 4
    for row in rows:
        seq = int(row["seq"])
        pixels, image_id = sent[seq]  # the publisher numbers messages from 0, as k here
        assert row["image_id"] == image_id and row["event"] == f"test/{image_id}"
        assert float(row["t_sample"]) == 50.0 + seq
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{seq:06d}-generated.png")), pixels)
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / f"{seq:06d}-seen.png")), gallery.load_image(image_id)
        )
    assert not any(sent[k][1] is None and (out / f"{k:06d}-generated.png").exists() for k in sent)
    log = [json.loads(m) for m in xdf.read_xdf(tmp_path / "session.xdf").stream("bus").markers]
    for entry in log:
        png = Image.open(io.BytesIO(base64.b64decode(entry["png"])))
        np.testing.assert_array_equal(np.asarray(png), sent[entry["seq"]][0])
