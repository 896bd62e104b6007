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
    if config.weights is not None and not Path(config.weights).expanduser().is_absolute():
        # weights travel beside (or relative to) the config that names them
        folder = resolve_config_path(name_or_path, "generator").resolve().parent
        config = config.model_copy(update={"weights": str((folder / config.weights).resolve())})
    return config


def load_generator(config: GeneratorConfig | str | Path, **overrides) -> Generator:
    """Build the generator a config describes (``overrides`` replace config keys, e.g. ``device="cpu"``)."""
    if not isinstance(config, GeneratorConfig):
        config = load_generator_config(config)
    if overrides:
        config = GeneratorConfig.model_validate({**config.model_dump(), **overrides})
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
