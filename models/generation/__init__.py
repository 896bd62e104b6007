"""Image generation from embeddings (docs/architecture.md §4): one :class:`Generator` interface, three
backends.

``sdxl-turbo-ipadapter`` (production, local weights), ``trained`` (a small generator trained in the repo on
the demo stimuli, :mod:`brainstream.models.generation.training`) and ``tiny`` (random tiny weights,
plumbing tests)::

    from brainstream.models.generation import load_generator

    gen = load_generator("tiny")                      # or a path / a GeneratorConfig
    image = gen.generate(embedding, space=gen.space)  # (H, W, 3) uint8
"""

from __future__ import annotations

from pathlib import Path

from brainstream.models.generation.base import Generator, GeneratorError
from brainstream.models.generation.config import GeneratorConfig, TinySizes


def load_generator_config(name_or_path: str | Path) -> GeneratorConfig:
    """A config under ``configs/generator/`` by name (``tiny``) or a YAML path."""
    from brainstream.models.config_base import load_config, resolve_config_path

    config = load_config(name_or_path, GeneratorConfig, kind="generator")
    # weights and prior travel beside (or relative to) the config that names them
    for key in ("weights", "prior"):
        value = getattr(config, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            folder = resolve_config_path(name_or_path, "generator").resolve().parent
            config = config.model_copy(update={key: str((folder / value).resolve())})
    return config


def load_generator(config: GeneratorConfig | str | Path, **overrides) -> Generator:
    """Build the generator a config describes (``overrides`` replace config keys, e.g. ``device="cpu"``).

    With a ``prior`` the result is a :class:`~brainstream.models.generation.prior.PriorGenerator` (its
    ``base`` draws without the prior)."""
    if not isinstance(config, GeneratorConfig):
        config = load_generator_config(config)
    if overrides:
        config = GeneratorConfig.model_validate({**config.model_dump(), **overrides})
    if config.prior is not None:
        from brainstream.models.generation.prior import EmbeddingPrior, PriorGenerator

        prior = EmbeddingPrior.load(config.prior)
        return PriorGenerator(load_generator(config.model_copy(update={"prior": None})), prior)
    if config.backend == "tiny":
        from brainstream.models.generation.tiny import build_tiny_generator

        return build_tiny_generator(config)
    if config.backend == "trained":
        from brainstream.models.generation.trained import build_trained_generator

        return build_trained_generator(config)
    from brainstream.models.generation.sdxl_ipadapter import IPAdapterTurboGenerator

    return IPAdapterTurboGenerator.from_config(config)


__all__ = [
    "Generator",
    "GeneratorConfig",
    "GeneratorError",
    "TinySizes",
    "load_generator",
    "load_generator_config",
]
