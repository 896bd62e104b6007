"""Which schema validates which kind of config file (``configs/<kind>/``)."""

from __future__ import annotations

import importlib
from pathlib import Path

from models.config_base import CONFIG_ROOT, ConfigError, StrictModel

# kind -> "module:Class". Each package registers the schema of the config kind it owns.
SCHEMAS: dict[str, str] = {
    "devices": "models.device_profile:DeviceProfile",
    "pipelines": "realtime.pipeline_config:PipelineConfig",
    "training": "models.training.config:TrainingConfig",
    "calibration": "calibration.protocol:ProtocolConfig",
    "generator": "models.generation.config:GeneratorConfig",
}


def kind_of(path: Path) -> str | None:
    """The config kind of a file under ``configs/<kind>/``, else None."""
    try:
        return path.resolve().relative_to(CONFIG_ROOT).parts[0]
    except (ValueError, IndexError):
        return None


def schema_for(path: Path, kind: str | None = None) -> type[StrictModel]:
    kind = kind or kind_of(path)
    if kind not in SCHEMAS:
        raise ConfigError(
            f"{path}: cannot tell what kind of config this is; pass --kind with one of: {', '.join(SCHEMAS)}"
        )
    module_name, class_name = SCHEMAS[kind].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"config kind '{kind}' is not available in this installation ({exc})") from None
    return getattr(module, class_name)
