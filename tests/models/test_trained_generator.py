"""The trained generator: recipe, weights file, loading through the production path, refusals.

Training runs for a handful of steps on a few procedural images (the shipped weights are checked
separately: their fingerprint, their space and that they draw the stimulus an embedding names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainstream.models.embedders import get_embedder
from brainstream.models.generation import GeneratorError, load_generator, load_generator_config
from brainstream.models.generation.trained import read_metadata
from brainstream.models.generation.training import sampler_sigmas, split_ids, train_generator
from brainstream.models.stimuli import procedural_images


def small_config(**training):
    config = load_generator_config("demo")
    recipe = {
        "autoencoder_steps": 4,
        "decoder_steps": 2,
        "unet_steps": 4,
        "augment_copies": 2,
        "batch_size": 4,
        "threads": 1,
        # the optional embedding-loss stages stay off unless a test turns them on
        "decoder_embedding_weight": 0.0,
        "embedding_loss_steps": 0,
    }
    recipe |= {"checkpoint_every": 2, **training}
    sizes = config.trained.model_copy(update={"block_out_channels": (8, 16), "decoder_channels": 8})
    return config.model_copy(update={"training": config.training.model_copy(update=recipe), "trained": sizes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = small_config()
    ids, images = zip(*[(i, im) for i, im, _ in procedural_images(14, seed=3)], strict=True)
    out = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    result = train_generator(
        config, list(images), list(ids), list(ids[:2]), get_embedder("demo"), out, "test", progress=False
    )
    return config.model_copy(update={"weights": str(out)}), result, list(ids)


def test_training_writes_a_small_file_with_space_sizes_and_fingerprint(trained):
    config, result, ids = trained
    meta = read_metadata(config.weights)
    assert meta["space"] == config.space and meta["embed_dim"] == 128 and meta["sizes"] == config.trained
    assert meta["info"]["fingerprint"] == result["fingerprint"]
    assert meta["info"]["n_train_images"] == len(ids) - 2 - len(result["validation_ids"])
    assert not set(result["validation_ids"]) & set(
        ids[:2]
    )  # excluded images are neither trained nor validation
    assert Path(config.weights).stat().st_size < 2_000_000


def test_trained_generator_loads_through_the_production_pipeline(trained):
    config, _, _ = trained
    gen = load_generator(config)
    assert type(gen.vae).__name__ == "AutoencoderTiny" and gen.scheduler.config.prediction_type == "sample"
    e = get_embedder("demo").embed([next(procedural_images(1, seed=9))[1]])[0]
    a, b = gen.generate(e, config.space), gen.generate(e, config.space)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_weights_for_another_space_or_size_are_refused_with_both_named(trained):
    config, _, _ = trained
    with pytest.raises(GeneratorError, match="space 'demo:randconv-v1:128'.*asks for 'other:space'"):
        load_generator(config.model_copy(update={"space": "other:space"}))
    bigger = config.trained.model_copy(update={"block_out_channels": (16, 32)})
    with pytest.raises(GeneratorError, match="sizes.*8, 16.*16, 32"):
        load_generator(config.model_copy(update={"trained": bigger}))
    with pytest.raises(GeneratorError, match="not found.*generator train"):
        load_generator(config.model_copy(update={"weights": str(Path(config.weights).with_name("none"))}))


def test_an_embedding_from_another_space_is_refused(trained):
    gen = load_generator(trained[0])
    with pytest.raises(GeneratorError, match="space mismatch"):
        gen.generate(np.ones(128, np.float32) / np.sqrt(128), "openclip:ViT-H-14:laion2b_s32b_b79k")


def test_a_stopped_run_resumes_from_its_checkpoints_and_a_new_recipe_starts_afresh(tmp_path: Path):
    import torch

    ids, images = zip(*[(i, im) for i, im, _ in procedural_images(12, seed=4)], strict=True)
    out = tmp_path / "g.safetensors"
    work = tmp_path / "g.safetensors.work"
    args = (list(images), list(ids), [], get_embedder("demo"), out, "test")
    config = small_config(autoencoder_steps=2, unet_steps=2)
    train_generator(config, *args, progress=False)
    first = read_metadata(out)["info"]["losses"]
    # stopped during the UNet stage: the finished autoencoder is picked up, not trained again
    (work / "unet.pt").unlink()
    train_generator(config, *args, progress=False)
    again = read_metadata(out)["info"]["losses"]
    assert again["autoencoder"] == first["autoencoder"] and again["unet"] == pytest.approx(
        first["unet"], rel=1e-4
    )
    # another recipe: its checkpoints are not mixed with the old ones
    train_generator(small_config(autoencoder_steps=3, unet_steps=2), *args, progress=False)
    assert torch.load(work / "autoencoder.pt", weights_only=True)["step"] == 3


def test_split_keeps_excluded_images_out_and_validation_apart():
    ids = [f"i{k}" for k in range(100)]
    train, val = split_ids(ids, ids[:10], seed=0)
    assert not set(train) & set(ids[:10]) and not set(val) & set(ids[:10]) and not set(train) & set(val)
    assert len(train) + len(val) == 90 and split_ids(ids, ids[:10], seed=0) == (train, val)


def test_sampler_sigmas_match_the_scheduler_the_generator_runs():
    from diffusers import EulerDiscreteScheduler

    from brainstream.models.generation.trained import SCHEDULER

    sched = EulerDiscreteScheduler(**SCHEDULER, prediction_type="sample", timestep_spacing="trailing")
    sched.set_timesteps(4)
    expected = sched.sigmas[:-1].numpy()
    got = sampler_sigmas([int(t) for t in sched.timesteps]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_the_first_step_is_trained_on_the_noise_the_generator_starts_from(trained):
    import torch

    from brainstream.models.generation.training import GeneratorTrainer, TrainingSet

    config, _, _ = trained
    gen = load_generator(config)
    gen.scheduler.set_timesteps(gen.steps)
    t = gen.scheduler.timesteps[0]
    first_input = gen.scheduler.scale_model_input(gen.noise * gen.scheduler.init_noise_sigma, t)
    empty = TrainingSet(torch.zeros(1, 3, 64, 64), torch.zeros(1, 128), np.zeros(1, int))
    fixed = GeneratorTrainer(config, empty, Path(config.weights).parent / "w", progress=False).fixed_noise()
    assert int(t) == max(config.training.train_timesteps)
    # the same pattern; the scheduler scales it by init_noise_sigma / sqrt(sigma^2 + 1), 1 within 0.3 %
    torch.testing.assert_close(fixed, first_input, rtol=5e-3, atol=5e-3)


def test_embedding_augmentation_corrupts_the_share_asked_at_the_levels_asked(tmp_path: Path):
    import torch

    from brainstream.models.generation.training import GeneratorTrainer, TrainingSet, generator_fingerprint

    n = 2000
    emb = torch.nn.functional.normalize(torch.randn(n, 128), dim=1)
    data = TrainingSet(torch.zeros(n, 3, 64, 64), emb, np.arange(n))
    clean = small_config()
    trainer = GeneratorTrainer(clean, data, tmp_path / "a", progress=False)
    idx = torch.arange(n)
    assert torch.equal(trainer.condition(idx, torch.Generator().manual_seed(0)), emb)
    noisy = small_config(embedding_noise_fraction=0.5, embedding_signal=0.2, embedding_noise=0.087)
    trainer = GeneratorTrainer(noisy, data, tmp_path / "b", progress=False)
    out = trainer.condition(idx, torch.Generator().manual_seed(0))
    changed = ~torch.isclose(out, emb).all(dim=1)
    assert 0.45 < changed.float().mean() < 0.55
    assert torch.allclose(out.norm(dim=1), torch.ones(n), atol=1e-5)
    # the corrupted rows keep about the asked cosine with their clean embedding (0.2 / |0.2 e + noise|)
    cos = (out[changed] * emb[changed]).sum(dim=1).mean()
    assert 0.15 < float(cos) < 0.25
    # off, the augmentation leaves a recipe's fingerprint as it was before the option existed
    assert generator_fingerprint(clean, ["a"], "v") != generator_fingerprint(noisy, ["a"], "v")
    same = small_config(embedding_signal=0.5)
    assert generator_fingerprint(clean, ["a"], "v") == generator_fingerprint(same, ["a"], "v")


def embedding_loss_trainer(tmp_path: Path, stage: dict):
    """A trainer on 8 procedural images with a finished autoencoder, and the demo embedder."""
    from brainstream.models.generation.training import GeneratorTrainer, build_training_set

    embedder = get_embedder("demo")
    images = [im for _, im, _ in procedural_images(8, seed=6)]
    data = build_training_set(images, embedder, 64, 1, 0, progress=False)
    trainer = GeneratorTrainer(small_config(**stage), data, tmp_path / "w", progress=False, embedder=embedder)
    trainer.train_autoencoder()
    return trainer, embedder


def test_the_embedding_loss_stage_pulls_each_image_towards_its_condition(tmp_path: Path):
    """The last stage makes the one-step image *embed* as the embedding it was drawn from (more than the
    same steps of the latent loss alone do); off, it leaves the recipe's fingerprint as before the option;
    an embedder without a differentiable twin is refused."""
    import copy

    import torch

    from brainstream.models.generation.training import GeneratorTrainer, generator_fingerprint

    stage = {"unet_steps": 4, "embedding_loss_steps": 60, "lr": 1e-2}
    trainer, embedder = embedding_loss_trainer(tmp_path, stage)
    data = trainer.data
    trainer.train_unet()
    start = copy.deepcopy(trainer.unet.state_dict())

    def agreement_after(weight: float) -> float:
        trainer.recipe = small_config(**stage, embedding_loss_weight=weight).training
        trainer.unet.load_state_dict(start)
        trainer.train_embedding_loss()
        with torch.no_grad():
            _, pixels = trainer.one_step(data.embeddings)
            cosine = torch.nn.functional.cosine_similarity(embedder.embed_tensor(pixels), data.embeddings)
        return float(cosine.mean())

    latent_only, with_loss = agreement_after(0.0), agreement_after(200.0)
    assert with_loss > latent_only + 0.04, (with_loss, latent_only)
    assert (tmp_path / "w" / "unet_embedding.pt").is_file()
    off = small_config(embedding_loss_weight=3.0)
    assert generator_fingerprint(off, ["a"], "v") == generator_fingerprint(small_config(), ["a"], "v")
    on = small_config(**stage)
    assert generator_fingerprint(on, ["a"], "v") != generator_fingerprint(
        small_config(**{**stage, "embedding_loss_steps": 0}), ["a"], "v"
    )
    blind = GeneratorTrainer(on, data, tmp_path / "x", progress=False, embedder=object())
    with pytest.raises(GeneratorError, match="differentiable embed_tensor.*embedding_loss_steps: 0"):
        blind.train_embedding_loss()


def test_the_decoder_stage_with_an_embedding_loss_decodes_images_that_embed_as_their_originals(
    tmp_path: Path,
):
    """Pixel losses alone blur; with ``decoder_embedding_weight`` the decoded images embed closer to their
    originals than the same decoder steps without it give. The weight enters the fingerprint only when on."""
    import copy

    import torch

    from brainstream.models.generation.training import GeneratorTrainer, generator_fingerprint

    stage = {"decoder_steps": 60, "lr": 1e-2}
    trainer, embedder = embedding_loss_trainer(tmp_path, stage)
    data = trainer.data
    start = copy.deepcopy(trainer.vae.state_dict())

    def agreement_after(weight: float) -> float:
        trainer.recipe = small_config(**stage, decoder_embedding_weight=weight).training
        trainer.vae.load_state_dict(start)
        trainer.train_decoder()
        with torch.no_grad():
            decoded = trainer.vae.decode(trainer.encode(data.images, scale=False)).sample
            embedded = embedder.embed_tensor((decoded.clamp(-1, 1) + 1) / 2)
        return float(torch.nn.functional.cosine_similarity(embedded, data.embeddings).mean())

    pixels_only, with_loss = agreement_after(0.0), agreement_after(5.0)
    assert with_loss > pixels_only + 0.08, (with_loss, pixels_only)
    on = small_config(**stage, decoder_embedding_weight=5.0)
    assert generator_fingerprint(on, ["a"], "v") != generator_fingerprint(small_config(**stage), ["a"], "v")
    blind = GeneratorTrainer(on, data, tmp_path / "x", progress=False, embedder=None)
    with pytest.raises(GeneratorError, match="differentiable embed_tensor.*decoder_embedding_weight: 0"):
        blind.train_decoder()
