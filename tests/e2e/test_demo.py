"""The embedded demo end to end: real processes, real LSL on loopback, the real bus, offscreen Qt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.parametrize("encoder", ["demo", "demo-causal"])
def test_shipped_demo_encoder_matches_the_simulator(encoder: str):
    """If the simulator, gallery or recipe changed, the shipped encoder must be rebuilt
    (`python -m brainstream.realtime.session.demo_assets --encoder NAME --ship`), otherwise every fresh demo
    trains for minutes."""
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery
    from brainstream.realtime.session.demo_assets import DEMO_ENCODERS, _fingerprint_of, demo_fingerprint

    shipped = DEMO_ENCODERS[encoder][1]
    assert _fingerprint_of(shipped) == demo_fingerprint(Gallery.load(default_gallery_dir()), encoder)


def test_shipped_demo_generator_matches_its_data_and_recipe():
    """If the gallery, the test split or configs/generator/demo.yaml changed, retrain and ship the generator:
    `brainstream generator train --config demo`."""
    from brainstream.models.demo_gallery import default_gallery_dir
    from brainstream.models.gallery import Gallery
    from brainstream.models.generation import load_generator_config
    from brainstream.models.generation.trained import read_metadata
    from brainstream.realtime.session.demo_assets import SHIPPED_GENERATOR, demo_generator_fingerprint

    config = load_generator_config("demo")
    assert Path(config.weights) == SHIPPED_GENERATOR
    shipped = read_metadata(SHIPPED_GENERATOR)["info"]["fingerprint"]
    assert shipped == demo_generator_fingerprint(config, Gallery.load(default_gallery_dir()))


def test_shipped_demo_prior_was_chosen_for_the_shipped_generator():
    """A retrained generator needs its embedding prior chosen again: `brainstream generator prior --config
    demo` (validation trials only)."""
    from brainstream.models.generation import load_generator_config
    from brainstream.models.generation.prior import EmbeddingPrior
    from brainstream.models.generation.trained import read_metadata

    config = load_generator_config("demo")
    prior = EmbeddingPrior.load(config.prior)
    assert prior.space == config.space
    assert prior.info["generator_fingerprint"] == read_metadata(config.weights)["info"]["fingerprint"]


@pytest.mark.timeout(240)
def test_demo_runs_headless_and_reports(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("DISPLAY", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "brainstream",
            "demo",
            "--seconds",
            "30",
            "--headless",
            "--json",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["windows"] >= 5
    assert summary["dropped_samples"] == 0
    assert summary["latency_ms"]["push_to_embedding"]["p50"] is not None
    assert summary["retrieval"]["trials"] >= 5
    assert summary["images"] >= 1
    # the demo's own numbers: N-way among the test images beside the gallery, reconstructions kept
    test = summary["retrieval_test_images"]
    assert test["n_way"] == 50 and test["trials"] >= 5 and test["chance_top5"] == pytest.approx(0.1)
    assert summary["reconstruction"]["two_way_identification"]["n"] >= 1
    kept = Path(summary["reconstruction"]["kept"])
    rows = (kept / "index.csv").read_text().splitlines()
    assert rows[0].startswith("seq,event,image_id") and len(rows) >= 2
    seq = rows[1].split(",")[0]
    assert (kept / f"{int(seq):06d}-generated.png").is_file() and (
        kept / f"{int(seq):06d}-seen.png"
    ).is_file()
    assert all(restarts == 0 for restarts in summary["restarts"].values()), summary["restarts"]
    # the screenshot shows something (not a blank frame)
    from PIL import Image

    assert summary["screenshots"], "no screenshot written"
    pixels = np.asarray(Image.open(summary["screenshots"][0]).convert("L"), dtype=np.float32)
    assert pixels.std() > 10
    # the session was recorded: signal, markers and the decoder's embeddings
    import pyxdf

    streams, _ = pyxdf.load_xdf(summary["recording"])
    names = {s["info"]["name"][0]: s for s in streams}
    assert "brainstream-demo-meg" in names and "brainstream-demo-meg-markers" in names
    assert any(n.startswith("bus:embedding.") for n in names)
    assert names["brainstream-demo-meg"]["time_series"].shape[1] == 272


@pytest.mark.timeout(240)
def test_continuous_demo_decodes_sliding_windows_incrementally_and_draws_them(tmp_path):
    """``demo --continuous``: a window every 100 ms, decoded stride by stride by the causal demo encoder,
    each retrieved; images newest-only, so the generator never builds a backlog; nothing dropped."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("DISPLAY", None)
    seconds = 15
    argv = [sys.executable, "-m", "brainstream", "demo", "--continuous", "--seconds", str(seconds),
            "--headless", "--json", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["incremental"] is True
    assert summary["windows"] >= 5 * seconds  # 10 per second, less the start-up
    assert summary["dropped_samples"] == 0
    assert summary["retrievals"] >= 0.9 * summary["windows"]  # every embedding answered
    assert 1 <= summary["images"] <= summary["windows"]
