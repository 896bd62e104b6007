"""Encoders: ``(batch, channels, times)`` float32 [+ ``subject`` LongTensor (batch,)] → ``(batch, D)``.

Build any of them from a plain dict (what a checkpoint's ``model.yaml`` stores)::

    build_encoder({"name": "brain_module", "n_channels": 272, "n_times": 181, "dim": 768})
    build_encoder({"name": "atm_s", "n_channels": 63, "n_times": 250, "dim": 1024, "n_subjects": 10})
    build_encoder({"name": "ridge", "n_channels": 272, "n_times": 181, "dim": 768})

A brain module with ``causal: true`` takes windows of ``n_times`` samples of which the first ``context``
(:func:`input_context`) are history for its unpadded convs; it can be served incrementally
(``models.incremental``).

Every encoder also has ``forward_heads(x, subject) -> (clip_out, mse_out)`` for the combined loss.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from brainstream.models.config_base import ConfigError, StrictModel, validate_config
from brainstream.models.encoders.atm import ATMS, ATMConfig
from brainstream.models.encoders.brain_module import BrainModule, BrainModuleConfig, conv_context
from brainstream.models.encoders.ridge import RidgeConfig, RidgeEncoder, RidgeFit, fit_ridge

# name -> (config schema, module class)
REGISTRY: dict[str, tuple[type[StrictModel], type[nn.Module]]] = {
    "brain_module": (BrainModuleConfig, BrainModule),
    "atm_s": (ATMConfig, ATMS),
    "ridge": (RidgeConfig, RidgeEncoder),
}

# A brain module small enough to train in about two minutes on two CPU cores (the embedded demo).
DEMO_BRAIN_MODULE: dict[str, Any] = {
    "name": "brain_module",
    "spatial_channels": 32,
    "fourier_freqs": 8,
    "hidden": 48,
    "depth": 2,
    "out_channels": 64,
    "dropout": 0.2,
    "aggregation": "channel_affine",
}


def parse_arch(arch_config: dict[str, Any], source: str = "arch config") -> StrictModel:
    """Validate an architecture dict; raise :class:`ConfigError` naming the bad keys."""
    if not isinstance(arch_config, dict) or "name" not in arch_config:
        raise ConfigError(f"{source}: expected a mapping with a 'name' key, one of: {', '.join(REGISTRY)}")
    name = arch_config["name"]
    if name not in REGISTRY:
        raise ConfigError(f"{source}: unknown encoder '{name}'; known encoders: {', '.join(REGISTRY)}")
    return validate_config(arch_config, REGISTRY[name][0], source)


def input_context(arch_config: dict[str, Any]) -> int:
    """Input samples an encoder needs before its window of interest: a causal brain module's receptive
    context (``conv_context``), else 0. Reads a partial architecture too (without the data-given sizes)."""
    if arch_config.get("name") != "brain_module" or not arch_config.get("causal", False):
        return 0
    fields = BrainModuleConfig.model_fields

    def get(key: str) -> Any:
        return arch_config.get(key, fields[key].default)

    return conv_context(get("kernel_size"), get("depth"), get("dilation_period"), get("glu"))


def build_encoder(arch_config: dict[str, Any]) -> nn.Module:
    """Build an encoder (freshly initialised) from its architecture dict (must contain ``name``)."""
    config = parse_arch(arch_config)
    return REGISTRY[config.name][1](config)


__all__ = [
    "ATMS",
    "DEMO_BRAIN_MODULE",
    "REGISTRY",
    "ATMConfig",
    "BrainModule",
    "BrainModuleConfig",
    "RidgeConfig",
    "RidgeEncoder",
    "RidgeFit",
    "build_encoder",
    "fit_ridge",
    "input_context",
    "parse_arch",
]
