"""Image embedders: the weight-free demo convnet and the local-folder CLIP vision tower."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from brainstream.models import stimuli
from brainstream.models.embedders import ImageEmbedder, get_embedder


@pytest.fixture(scope="module")
def demo() -> ImageEmbedder:
    return get_embedder("demo", dim=64)


def test_demo_embedder_contract(demo) -> None:
    images = [img for _, img, _ in stimuli.procedural_images(6, seed=0, size=96)]
    emb = demo.embed(images)
    assert isinstance(demo, ImageEmbedder)
    assert demo.space == "demo:randconv-v1:64" and demo.dim == 64
    assert emb.shape == (6, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # batch-invariant and deterministic across instances
    one_by_one = np.concatenate([demo.embed([img]) for img in images])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)
    np.testing.assert_allclose(get_embedder("demo", dim=64).embed(images), emb, atol=1e-6)
    assert demo.embed([]).shape == (0, 64)


def test_demo_space_is_meaningful(demo) -> None:
    """A slightly shifted or recoloured image is closer to its original than to any other image, and
    unrelated images are spread out (not crowded in one cone)."""
    specs = [stimuli.procedural_spec(5, i) for i in range(60)]
    originals = demo.embed([stimuli.render_procedural(s, 96, 5, i) for i, s in enumerate(specs)])
    sims = originals @ originals.T
    off = sims[~np.eye(len(sims), dtype=bool)]
    assert abs(off.mean()) < 0.15 and np.percentile(off, 95) < 0.8
    for change in ({"x": 0.06}, {"hue": 0.04}, {"size": 0.03}):
        variants = [
            dataclasses.replace(s, **{k: getattr(s, k) + v for k, v in change.items()}) for s in specs
        ]
        emb = demo.embed([stimuli.render_procedural(s, 96, 5, i) for i, s in enumerate(variants)])
        nearest = np.argmax(emb @ originals.T, axis=1)
        assert (nearest == np.arange(len(specs))).mean() >= 0.95, change


def test_demo_embedder_has_a_differentiable_twin_that_embeds_the_same(demo) -> None:
    """``embed_tensor`` (a generator's training loss) is ``embed`` itself, with gradients to the pixels."""
    import torch

    images = [img for _, img, _ in stimuli.procedural_images(4, seed=1, size=64)]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    twin = demo.embed_tensor(pixels)
    np.testing.assert_allclose(twin.detach().numpy(), demo.embed(images), atol=1e-6)
    # pulling an image's embedding towards another image's moves its pixels
    (1 - torch.nn.functional.cosine_similarity(twin[0], twin[1].detach(), dim=0)).backward()
    assert pixels.grad is not None and float(pixels.grad[0].abs().sum()) > 0
    assert float(pixels.grad[1:].abs().sum()) == 0
    with pytest.raises(ValueError, match=r"expects \(n, 3, 64, 64\) pixels, got \(4, 3, 32, 32\)"):
        demo.embed_tensor(torch.zeros(4, 3, 32, 32))


def test_demo_embedder_rejects_bad_images_and_dims(demo) -> None:
    with pytest.raises(ValueError, match=r"image 1: expected an \(H, W, 3\) uint8"):
        demo.embed([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        demo.embed([np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(ValueError, match="between 8 and 256"):
        get_embedder("demo", dim=4)
    with pytest.raises(ValueError, match="unknown embedder 'vgg'"):
        get_embedder("vgg")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny randomly initialised CLIP vision tower saved like IP-Adapter's image_encoder folder
    (config + safetensors, no preprocessor config): real transformers code, no download."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=24,
    )
    folder = tmp_path_factory.mktemp("clip") / "image_encoder"
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def test_clip_embedder_from_local_folder(tiny_clip_dir) -> None:
    clip = get_embedder("clip", model_dir=tiny_clip_dir, space="test:tiny-clip:24")
    assert isinstance(clip, ImageEmbedder) and clip.dim == 24 and clip.space == "test:tiny-clip:24"
    images = [img for _, img, _ in stimuli.procedural_images(5, seed=0, size=80)]
    emb = clip.embed(images)
    assert emb.shape == (5, 24) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(clip.embed(images[2:3])[0], emb[2], atol=1e-5)
    assert np.abs(emb @ emb.T - np.eye(5)).max() > 1e-3  # different images, different embeddings
    # the same weights give the same space whatever the input size (resize + centre crop to 32 px)
    big = [np.kron(img, np.ones((2, 2, 1), dtype=np.uint8)) for img in images]
    assert np.mean(np.sum(clip.embed(big) * emb, axis=1)) > 0.95


def test_clip_space_from_folder_file_and_errors(tiny_clip_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="space of .* is unknown: pass space"):
        get_embedder("clip", model_dir=tiny_clip_dir)
    (tiny_clip_dir / "brainstream.yaml").write_text("space: 'test:from-file:24'\n")
    try:
        assert get_embedder("clip", model_dir=tiny_clip_dir).space == "test:from-file:24"
    finally:
        (tiny_clip_dir / "brainstream.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        get_embedder("clip", model_dir=tmp_path / "nowhere", space="x")
