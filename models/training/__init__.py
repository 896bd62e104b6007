"""Training of brain → image-embedding encoders: config schema, trainer, DistributedDataParallel entry."""

from __future__ import annotations

from brainstream.models.training.config import TrainingConfig, load_training_config

__all__ = ["TrainingConfig", "load_training_config"]
