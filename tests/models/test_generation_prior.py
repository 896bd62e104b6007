"""The embedding prior: top-k blending onto a bank of image embeddings, its file, and the generator wrapper
that applies it (the tiny random generator stands in for the trained one: only the plumbing is tested)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from brainstream.models.embedders import get_embedder
from brainstream.models.generation import GeneratorError, load_generator
from brainstream.models.generation.prior import EmbeddingPrior, PriorGenerator, select_prior
from brainstream.models.stimuli import procedural_images

SPACE = "demo:randconv-v1:128"


@pytest.fixture(scope="module")
def bank():
    images = [im for _, im, _ in procedural_images(40, seed=5, size=64)]
    return get_embedder("demo").embed(images)


@pytest.fixture(scope="module")
def tiny():
    return load_generator("tiny")


def test_nearest_neighbour_prior_returns_the_bank_row_a_noisy_embedding_came_from(bank):
    prior = EmbeddingPrior(bank, k=1, temperature=1.0, space=SPACE)
    rng = np.random.default_rng(0)
    # decoded embeddings: shrunk toward the mean and noisy
    noisy = 0.5 * bank[:10] + 0.5 * bank.mean(axis=0) + 0.02 * rng.standard_normal((10, bank.shape[1]))
    out = prior(noisy)
    assert np.allclose(out, bank[:10] / np.linalg.norm(bank[:10], axis=1, keepdims=True), atol=1e-5)
    assert prior(noisy[0]).shape == (bank.shape[1],)


def test_blending_more_neighbours_at_a_high_temperature_moves_toward_their_mean(bank):
    sharp = EmbeddingPrior(bank, k=8, temperature=1e-3)(bank[3])
    flat = EmbeddingPrior(bank, k=8, temperature=10.0)(bank[3])
    assert np.isclose(np.linalg.norm(flat), 1.0) and np.isclose(np.linalg.norm(sharp), 1.0)
    assert float(sharp @ bank[3]) > float(flat @ bank[3])


def test_bad_settings_and_inputs_are_refused_with_what_was_expected(bank):
    with pytest.raises(GeneratorError, match="between 1 and the bank size"):
        EmbeddingPrior(bank, k=len(bank) + 1, temperature=0.1)
    with pytest.raises(GeneratorError, match="temperature must be > 0"):
        EmbeddingPrior(bank, k=2, temperature=0.0)
    with pytest.raises(GeneratorError, match="takes embeddings of size 128"):
        EmbeddingPrior(bank, k=2, temperature=0.1)(np.ones(64, np.float32))


def test_file_round_trip_and_a_foreign_file_refused(bank, tmp_path: Path):
    path = EmbeddingPrior(bank, 4, 0.05, SPACE).save(tmp_path / "prior.safetensors", {"note": "test"})
    loaded = EmbeddingPrior.load(path)
    assert (loaded.k, loaded.temperature, loaded.space, loaded.info) == (4, 0.05, SPACE, {"note": "test"})
    assert np.allclose(loaded.bank, bank, atol=1e-3)
    from safetensors.numpy import save_file

    save_file({"bank": bank}, str(tmp_path / "other.safetensors"))
    with pytest.raises(GeneratorError, match="not an embedding prior file"):
        EmbeddingPrior.load(tmp_path / "other.safetensors")
    with pytest.raises(GeneratorError, match="brainstream generator prior"):
        EmbeddingPrior.load(tmp_path / "missing.safetensors")


def test_prior_generator_draws_what_the_base_draws_from_the_prior_output(bank, tiny):
    prior = EmbeddingPrior(bank, 4, 0.05, SPACE)
    gen = PriorGenerator(tiny, prior)
    e = 0.3 * bank[7] + 0.1
    assert np.array_equal(gen.generate(e, SPACE), tiny.generate(prior(e), SPACE))
    assert not np.array_equal(gen.generate(e, SPACE), tiny.generate(e, SPACE))
    with pytest.raises(GeneratorError, match="space mismatch"):
        gen.generate(e, "other:space:128")
    with pytest.raises(GeneratorError, match="the prior's bank is in space"):
        PriorGenerator(tiny, EmbeddingPrior(bank, 4, 0.05, "other:space:128"))


def test_a_config_naming_a_prior_loads_it_relative_to_the_config(bank, tmp_path: Path):
    from brainstream.models.config_base import resolve_config_path

    EmbeddingPrior(bank, 2, 0.1, SPACE).save(tmp_path / "p.safetensors", {})
    config = yaml.safe_load(resolve_config_path("tiny", "generator").read_text())
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({**config, "prior": "p.safetensors"}))
    gen = load_generator(tmp_path / "g.yaml")
    assert isinstance(gen, PriorGenerator) and gen.prior.k == 2 and gen.height == 64


def test_selection_scores_every_setting_and_returns_the_best(bank, tiny):
    rng = np.random.default_rng(1)
    val, train = bank[:8], bank[8:]
    true = np.repeat(np.arange(8), 2)
    decoded = val[true] + 0.05 * rng.standard_normal((16, bank.shape[1])).astype(np.float32)
    embed = get_embedder("demo").embed
    prior, rows = select_prior(
        decoded,
        true,
        val,
        train,
        tiny,
        embed,
        ks=(1, 4),
        temperatures=(0.05, 0.5),
        space=SPACE,
        progress=False,
    )
    assert len(rows) == 2 + 2  # none, k=1, then k=4 at each temperature
    best = max(rows, key=lambda r: r["two_way"])
    if prior is None:
        assert best["k"] is None
    else:
        assert (prior.k, prior.temperature) == (best["k"], best["temperature"])


def test_selection_lets_named_banks_compete_and_the_file_says_which_won(bank, tmp_path: Path):
    from brainstream.models.generation import load_generator_config

    # the shipped demo generator: it draws what an embedding says (the tiny random one draws noise)
    demo = load_generator(load_generator_config("demo").model_copy(update={"prior": None}))
    rng = np.random.default_rng(2)
    val, train = bank[:8], bank[8:]
    true = np.repeat(np.arange(8), 2)
    decoded = val[true] + 0.2 * rng.standard_normal((16, bank.shape[1])).astype(np.float32)
    # a bank that holds the validation images themselves must win (it can return each one exactly)
    banks = {"images": train, "with-validation": np.concatenate([train, val])}
    prior, rows = select_prior(
        decoded, true, val, banks, demo, get_embedder("demo").embed, ks=(1,), space=SPACE, progress=False
    )
    assert [(r["bank"], r["k"]) for r in rows] == [(None, None), ("images", 1), ("with-validation", 1)]
    assert rows[2]["two_way"] > max(rows[0]["two_way"], rows[1]["two_way"])
    assert prior is not None and prior.bank_name == "with-validation" and len(prior.bank) == len(bank)
    loaded = EmbeddingPrior.load(prior.save(tmp_path / "prior.safetensors", {}))
    assert loaded.bank_name == "with-validation" and loaded.k == 1


def test_noise_estimate_recovers_the_corruption_it_is_given(bank):
    from brainstream.models.generation.prior import estimate_embedding_noise

    rng = np.random.default_rng(3)
    true = np.repeat(bank, 20, axis=0)
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    decoded = 3.0 * (0.3 * true + 0.05 * rng.standard_normal(true.shape))  # the decoder's scale is arbitrary
    est = estimate_embedding_noise(decoded, true)
    expected = 0.3 / np.sqrt(0.09 + 128 * 0.05**2)
    assert est["signal"] == pytest.approx(expected, rel=0.05)
    assert est["noise"] == pytest.approx(0.05 / np.sqrt(0.09 + 128 * 0.05**2), rel=0.1)
