"""Which schema validates which kind of config (``<config folder>/<kind>/NAME.yaml``).

The application knows every kind; each layer owns the schema of the kinds it reads, so this registry sits
above all three and imports each schema only when asked.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from brainstream.models.config_base import ConfigError, StrictModel, config_search_path

# kind -> "module:Class"
SCHEMAS: dict[str, str] = {
    "devices": "brainstream.models.device_profile:DeviceProfile",
    "pipelines": "brainstream.realtime.pipeline_config:PipelineConfig",
    "training": "brainstream.models.training.config:TrainingConfig",
    "calibration": "brainstream.calibration.protocol:ProtocolConfig",
    "generator": "brainstream.models.generation.config:GeneratorConfig",
}


def kind_of(path: Path) -> str | None:
    """The config kind of a file that lies in ``<folder>/<kind>/`` of a config folder, else None."""
    resolved = path.resolve()
    for root in config_search_path():
        try:
            kind = resolved.relative_to(root.resolve()).parts[0]
        except (ValueError, IndexError):
            continue
        if kind in SCHEMAS:
            return kind
    # a file in a folder named after its kind, anywhere (a lab's own configs/devices/)
    return path.resolve().parent.name if path.resolve().parent.name in SCHEMAS else None


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
