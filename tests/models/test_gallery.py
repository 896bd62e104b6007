"""Gallery folders: round trip, safe loading, space checks and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from brainstream.models.embedders import l2_normalise
from brainstream.models.gallery import Gallery, GalleryError, SpaceMismatchError

SPACE = "test:space-a:8"


def _make(tmp_path, n=5, dim=8, images=True, **kw) -> Gallery:
    rng = np.random.default_rng(0)
    emb = l2_normalise(rng.normal(size=(n, dim)))
    imgs = [rng.integers(0, 255, (200, 150, 3), dtype=np.uint8) for _ in range(n)] if images else None
    ids = [f"img{i}" for i in range(n)]
    return Gallery.save(
        tmp_path / "g", embeddings=emb, ids=ids, space=SPACE, embedder="test", images=imgs, **kw
    )


def test_round_trip_with_thumbnails(tmp_path) -> None:
    g = _make(tmp_path)
    loaded = Gallery.load(tmp_path / "g", space=SPACE)
    assert loaded.ids == g.ids and loaded.space == SPACE and loaded.dim == 8 and len(loaded) == 5
    np.testing.assert_allclose(loaded.embeddings, g.embeddings)
    assert loaded.index_of("img3") == 3
    np.testing.assert_array_equal(loaded.embeddings_for(["img4", "img0"]), g.embeddings[[4, 0]])
    thumb = loaded.load_image("img2")
    assert thumb.dtype == np.uint8 and max(thumb.shape[:2]) <= 128 and thumb.shape[2] == 3
    assert loaded.image_path("img2") == tmp_path / "g" / "images" / "img2.png"
    meta = yaml.safe_load((tmp_path / "g" / "gallery.yaml").read_text())
    assert meta["space"] == SPACE and meta["n"] == 5 and meta["dim"] == 8


def test_float16_storage_loads_as_float32(tmp_path) -> None:
    _make(tmp_path, images=False, dtype="float16")
    assert np.load(tmp_path / "g" / "embeddings.npy").dtype == np.float16
    g = Gallery.load(tmp_path / "g")
    assert g.embeddings.dtype == np.float32
    with pytest.raises(GalleryError, match="no thumbnail"):
        g.image_path("img0")


def test_space_mismatch_names_both_spaces(tmp_path) -> None:
    _make(tmp_path, images=False)
    with pytest.raises(SpaceMismatchError, match=r"demo:randconv-v1:8.*test:space-a:8"):
        Gallery.load(tmp_path / "g", space="demo:randconv-v1:8")
    g = Gallery.load(tmp_path / "g")
    with pytest.raises(SpaceMismatchError, match="openclip"):
        g.check_space("openclip:ViT-H-14:laion2b_s32b_b79k", what="checkpoint")


def test_unknown_ids_are_listed(tmp_path) -> None:
    g = _make(tmp_path, images=False)
    with pytest.raises(KeyError, match="nope"):
        g.index_of("nope")
    with pytest.raises(KeyError, match=r"2 image id\(s\) unknown.*'x1', 'x2'"):
        g.embeddings_for(["img0", "x1", "x2"])


def test_pickled_embeddings_are_refused(tmp_path) -> None:
    _make(tmp_path, images=False)
    obj = np.empty(5, dtype=object)
    obj[:] = [np.ones(8)] * 5
    np.save(tmp_path / "g" / "embeddings.npy", obj, allow_pickle=True)
    with pytest.raises(GalleryError, match="not a plain numeric"):
        Gallery.load(tmp_path / "g")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda root: (root / "ids.json").unlink(), "missing ids.json"),
        (lambda root: (root / "ids.json").write_text(json.dumps(["a", "b"])), r"shape \(2, dim\)"),
        (lambda root: (root / "ids.json").write_text("{oops"), "not valid JSON"),
        (lambda root: (root / "gallery.yaml").write_text("space: [1\n"), "not valid YAML"),
        (lambda root: (root / "gallery.yaml").write_text("space: s\nn: 9\n"), "n=9"),
        (lambda root: np.save(root / "embeddings.npy", np.ones((5, 8), np.float32)), "L2-normalised"),
    ],
)
def test_corrupt_folders_get_clear_errors(tmp_path, corrupt, message) -> None:
    _make(tmp_path, images=False)
    corrupt(tmp_path / "g")
    with pytest.raises(GalleryError, match=message):
        Gallery.load(tmp_path / "g")


def test_missing_folder_says_how_to_build(tmp_path) -> None:
    with pytest.raises(GalleryError, match="brainstream gallery build"):
        Gallery.load(tmp_path / "absent")


def test_save_refuses_bad_input_and_non_empty_folders(tmp_path) -> None:
    emb = l2_normalise(np.ones((2, 4)))
    with pytest.raises(GalleryError, match="duplicate"):
        Gallery.save(tmp_path / "a", embeddings=emb, ids=["x", "x"], space=SPACE, embedder="t")
    with pytest.raises(GalleryError, match="no '/'"):
        Gallery.save(tmp_path / "b", embeddings=emb, ids=["x", "a/b"], space=SPACE, embedder="t")
    with pytest.raises(GalleryError, match="L2-normalised"):
        Gallery.save(
            tmp_path / "c", embeddings=np.ones((2, 4), np.float32), ids=["x", "y"], space=SPACE, embedder="t"
        )
    assert not (tmp_path / "a").exists()  # nothing written when validation fails
    _make(tmp_path, images=False)
    with pytest.raises(GalleryError, match="not empty"):
        _make(tmp_path, images=False)


# --------------------------------------------------------------------------------------------- the CLI
def _write_images(folder, n=6):
    from PIL import Image

    from brainstream.models.stimuli import procedural_images

    for k, (image_id, img, _) in enumerate(procedural_images(n, seed=9, size=150)):
        sub = folder / ("concept_a" if k % 2 else "concept_b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{image_id}{'.jpg' if k % 3 == 0 else '.png'}")


def test_cli_gallery_build_demo_embedder(tmp_path, capsys) -> None:
    from brainstream.cli import main

    _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    rc = main(["gallery", "build", str(tmp_path / "imgs"), "--embedder", "demo", "--dim", "32",
               "--out", str(tmp_path / "out"), "--json"])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 6 and result["dim"] == 32 and result["space"] == "demo:randconv-v1:32"
    g = Gallery.load(tmp_path / "out", space="demo:randconv-v1:32")
    assert sorted(g.ids) == [f"proc-{i:05d}" for i in range(6)]
    assert max(g.load_image("proc-00001").shape[:2]) == 128
    # rebuilding from the same files gives the same embeddings (determinism end to end)
    assert main(["gallery", "build", str(tmp_path / "imgs"), "--embedder", "demo", "--dim", "32",
                 "--out", str(tmp_path / "out2")]) == 0  # fmt: skip
    np.testing.assert_array_equal(Gallery.load(tmp_path / "out2").embeddings, g.embeddings)
    assert main(["gallery", "info", str(tmp_path / "out"), "--json"]) == 0
    capsys.readouterr()
    assert main(["gallery", "demo", "--out", str(tmp_path / "demo"), "--n-procedural", "4", "--json"]) == 0
    demo = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert demo["space"] == "demo:randconv-v1:128" and "proc-00003" in Gallery.load(tmp_path / "demo").ids


def test_cli_gallery_errors_are_user_facing(tmp_path, capsys) -> None:
    from brainstream.cli import main

    _write_images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "concept_c").mkdir()
    (tmp_path / "imgs" / "concept_a" / "proc-00001.png").rename(
        tmp_path / "imgs" / "concept_c" / "proc-00000.png"
    )
    args = ["gallery", "build", str(tmp_path / "imgs"), "--embedder", "demo", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "rename one of them" in capsys.readouterr().err
    assert (
        main(["gallery", "build", str(tmp_path / "none"), "--embedder", "demo", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "image folder not found" in capsys.readouterr().err
    assert (
        main(["gallery", "build", str(tmp_path / "imgs"), "--embedder", "clip", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--model-dir" in capsys.readouterr().err
    assert main(["gallery", "info", str(tmp_path / "nothing")]) == 2
    assert "brainstream gallery build" in capsys.readouterr().err
