"""The generator: tiny random SDXL + IP-Adapter loaded through the production local-folder path, on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainstream.models.config_base import ConfigError, load_config
from brainstream.models.generation import (
    GeneratorConfig,
    GeneratorError,
    load_generator,
    load_generator_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "generator"


@pytest.fixture(scope="module")
def gen():
    return load_generator("tiny")


def embedding(seed: int, dim: int = 128) -> np.ndarray:
    e = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return e / np.linalg.norm(e)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_image_is_uint8_hw3_and_not_flat(gen):
    image = gen.generate(embedding(0), gen.space)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5  # a real decoded picture, not a constant


def test_same_seed_same_image_across_calls_and_instances(gen):
    first = gen.generate(embedding(1), gen.space)
    np.testing.assert_array_equal(first, gen.generate(embedding(1), gen.space))
    again = load_generator("tiny")  # rebuilt from the same config: same weights, same noise
    np.testing.assert_array_equal(first, again.generate(embedding(1), again.space))
    other_seed = load_generator("tiny", seed=1)  # other initial noise, same weights
    assert mean_abs_diff(first, other_seed.generate(embedding(1), other_seed.space)) > 1.0


def test_different_embeddings_give_different_images(gen):
    a, b = gen.generate(embedding(2), gen.space), gen.generate(embedding(3), gen.space)
    assert mean_abs_diff(a, b) > 1.0


def test_adapter_scale_zero_differs_from_one_and_ignores_the_embedding(gen):
    with_adapter = gen.generate(embedding(4), gen.space)
    try:
        gen.set_adapter_scale(0.0)
        off_a = gen.generate(embedding(4), gen.space)
        off_b = gen.generate(embedding(5), gen.space)
    finally:
        gen.set_adapter_scale(1.0)
    assert mean_abs_diff(with_adapter, off_a) > 1.0
    np.testing.assert_array_equal(off_a, off_b)  # the adapter is the embedding's only way in


def test_lean_path_matches_the_diffusers_pipeline_call(gen):
    """Our one-call loop feeds IP-Adapter as StableDiffusionXLPipeline(ip_adapter_image_embeds=...) does."""
    e = embedding(6)
    ours = gen.generate(e, gen.space)
    ref = gen.pipe(
        prompt_embeds=gen.prompt_embeds,
        pooled_prompt_embeds=gen.pooled,
        ip_adapter_image_embeds=[gen.image_embeds(e)],
        num_inference_steps=1,
        guidance_scale=0.0,
        latents=gen.noise.clone(),
        height=gen.height,
        width=gen.width,
        output_type="np",
    ).images[0]
    assert np.abs(ours.astype(np.float64) - ref * 255).max() <= 1.0


def test_embedding_norm_is_rescaled(gen):
    # unit-norm decoded embeddings are brought to the adapter's norm: the scale of the input does not matter
    unit, scaled = gen.generate(embedding(7), gen.space), gen.generate(embedding(7) * 9, gen.space)
    assert np.abs(unit.astype(np.int16) - scaled).max() <= 1  # float rounding only
    assert float(gen.image_embeds(embedding(7)).norm()) == pytest.approx(gen.embed_norm, rel=1e-5)


def test_wrong_space_or_size_is_refused(gen):
    with pytest.raises(GeneratorError, match="openclip.*demo|demo.*openclip"):
        gen.generate(embedding(0), "openclip:ViT-H-14:laion2b_s32b_b79k")
    with pytest.raises(GeneratorError, match=r"\(128,\)"):
        gen.generate(embedding(0, dim=64), gen.space)
    with pytest.raises(GeneratorError, match="NaN"):
        gen.generate(np.full(128, np.nan, np.float32), gen.space)


def test_taesd_decoder_option():
    gen = load_generator("tiny", decoder="taesdxl")
    image = gen.generate(embedding(8), gen.space)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert type(gen.vae).__name__ == "AutoencoderTiny"


def test_configs_validate_and_production_needs_local_folders(tmp_path: Path):
    for path in CONFIG_DIR.glob("*.yaml"):
        load_config(path, GeneratorConfig)
    prod = load_generator_config("sdxl_turbo_ipadapter")
    assert prod.steps == 1 and prod.guidance_scale == 0.0 and prod.embed_dim == 1024
    missing = prod.model_copy(update={"model_dir": str(tmp_path / "nowhere")})
    with pytest.raises(GeneratorError, match="nowhere.*Nothing is downloaded"):
        load_generator(missing)
    with pytest.raises(ConfigError, match="guidance_scale"):
        from brainstream.models.config_base import validate_config

        validate_config({"backend": "tiny", "space": None, "guidance_scale": 2.0}, GeneratorConfig, "x.yaml")


def test_production_loader_reads_local_folders_like_the_tiny_path(gen, tmp_path: Path):
    """``IPAdapterTurboGenerator.from_config`` (the sdxl-turbo-ipadapter backend) on folders holding the tiny
    weights gives the tiny generator's image: the production path is exercised end to end, offline."""
    from brainstream.models.generation.tiny import write_tiny_folders

    paths = write_tiny_folders(gen.config, tmp_path)
    prod = gen.config.model_copy(
        update={"backend": "sdxl-turbo-ipadapter", **{k: str(v) for k, v in paths.items()}}
    )
    loaded = load_generator(GeneratorConfig.model_validate(prod.model_dump()))
    assert type(loaded).__name__ == "IPAdapterTurboGenerator"
    np.testing.assert_array_equal(
        loaded.generate(embedding(9), gen.space), gen.generate(embedding(9), gen.space)
    )


def test_empty_prompt_embeddings_are_computed_once_then_no_text_encoder_is_loaded(gen, tmp_path: Path):
    from brainstream.models.generation.tiny import write_tiny_folders

    paths = write_tiny_folders(gen.config, tmp_path, text_encoders=True)
    assert not paths["prompt_embeds"].exists()
    prod = gen.config.model_copy(
        update={"backend": "sdxl-turbo-ipadapter", **{k: str(v) for k, v in paths.items()}}
    )
    first = load_generator(prod)
    assert paths["prompt_embeds"].is_file()  # computed from the text encoders, stored
    assert first.pipe.text_encoder is None and first.pipe.text_encoder_2 is None  # none kept for live use
    stamp = paths["prompt_embeds"].stat().st_mtime_ns
    second = load_generator(prod)
    assert paths["prompt_embeds"].stat().st_mtime_ns == stamp  # reused, not recomputed
    np.testing.assert_array_equal(
        first.generate(embedding(10), gen.space), second.generate(embedding(10), gen.space)
    )
