"""The demo stimulus set: deterministic, distinct, and cached as a gallery folder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from brainstream.models import demo_gallery, stimuli
from brainstream.models.gallery import Gallery


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def test_procedural_images_are_deterministic_per_seed() -> None:
    a = [img for _, img, _ in stimuli.procedural_images(12, seed=3, size=50)]
    b = [img for _, img, _ in stimuli.procedural_images(12, seed=3, size=50)]
    c = [img for _, img, _ in stimuli.procedural_images(12, seed=4, size=50)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sum(np.array_equal(x, y) for x, y in zip(a, c, strict=True)) == 0


def test_at_least_1000_distinct_procedural_images_covering_all_attributes() -> None:
    items = list(stimuli.procedural_images(1000, seed=0, size=32))
    assert len({_digest(img) for _, img, _ in items}) == 1000
    assert len({image_id for image_id, _, _ in items}) == 1000
    specs = [spec for _, _, spec in items]
    assert {s.shape for s in specs} == set(stimuli.SHAPES)
    assert {s.texture for s in specs} == set(stimuli.TEXTURES)
    assert {s.background for s in specs} == set(stimuli.BACKGROUNDS)
    xs = np.array([s.x for s in specs])
    assert xs.min() < 0.35 and xs.max() > 0.65  # positions vary across the field
    image = items[0][1]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8


def test_natural_images_load_offline_as_distinct_square_thumbnails() -> None:
    items = list(stimuli.natural_images(size=64))
    assert len(items) >= 15
    assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for _, img in items)
    assert len({_digest(img) for _, img in items}) == len(items)
    assert all(image_id.startswith("nat-") and "/" not in image_id for image_id, _ in items)


def test_to_rgb_uint8_converts_common_formats_and_refuses_others() -> None:
    grey = np.full((10, 12), 7, dtype=np.uint8)
    assert stimuli.to_rgb_uint8(grey).shape == (10, 12, 3)
    assert stimuli.to_rgb_uint8(np.ones((5, 5), dtype=bool)).max() == 255
    assert stimuli.to_rgb_uint8(np.full((4, 4, 3), 0.5)).max() == 128
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent → white
    assert stimuli.to_rgb_uint8(rgba).min() == 255
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        stimuli.to_rgb_uint8(np.zeros((4, 4, 5), dtype=np.uint8))


def test_demo_gallery_build_is_deterministic(tmp_path) -> None:
    g1 = demo_gallery.build_demo_gallery(tmp_path / "a", n_procedural=20, seed=1, progress=False)
    g2 = demo_gallery.build_demo_gallery(tmp_path / "b", n_procedural=20, seed=1, progress=False)
    assert g1.ids == g2.ids and len(g1) == 20 + len(list(stimuli.natural_images(16)))
    np.testing.assert_array_equal(g1.embeddings, g2.embeddings)
    for image_id in ("proc-00007", g1.ids[0]):
        assert g1.image_path(image_id).read_bytes() == g2.image_path(image_id).read_bytes()
    assert g1.meta["stimuli"] == {"version": stimuli.STIMULI_VERSION, "n_procedural": 20, "seed": 1}
    assert (tmp_path / "a" / "stimuli.json").is_file()


def test_default_gallery_dir_builds_once_and_keys_on_content(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BRAINSTREAM_CACHE", str(tmp_path / "cache"))
    path = demo_gallery.default_gallery_dir(n_procedural=10, seed=2)
    assert path.parent == tmp_path / "cache" and path.name.startswith("gallery-demo-")
    gallery = Gallery.load(path)
    assert len(gallery) == 10 + len(list(stimuli.natural_images(16)))
    stamp = (path / "embeddings.npy").stat().st_mtime_ns
    assert demo_gallery.default_gallery_dir(n_procedural=10, seed=2) == path
    assert (path / "embeddings.npy").stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = demo_gallery.default_gallery_dir(n_procedural=10, seed=3, build=False)
    assert other != path and not other.exists()
    # no temporary build folders left behind
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [path.name]
