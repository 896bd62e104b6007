"""Strict YAML configuration: ``yaml.safe_load`` + pydantic with unknown keys rejected.

Every config file of the project is loaded through :func:`load_config`, so every error names the file, the
key and what is allowed there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class StrictModel(BaseModel):
    """Base of every config schema: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


ModelT = TypeVar("ModelT", bound=StrictModel)


def _describe_error(err: dict[str, Any], schema: type[BaseModel]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ())) or "<top level>"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(schema, err.get("loc", ())[:-1])
        return f"unknown key '{loc}'; allowed keys here: {', '.join(allowed) or 'none'}"
    if kind == "missing":
        return f"missing required key '{loc}'"
    return f"key '{loc}': {err.get('msg', 'invalid value')} (got {err.get('input')!r})"


def _allowed_keys(schema: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    current: Any = schema
    for part in parent:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next(
            (
                arg
                for arg in (*getattr(annotation, "__args__", ()), annotation)
                if hasattr(arg, "model_fields")
            ),
            None,
        )
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}).keys())


def validate_config(data: Any, schema: type[ModelT], source: str = "<config>") -> ModelT:
    """Validate a mapping against ``schema``; raise :class:`ConfigError` naming ``source`` and bad keys."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys to values at the top level, got {type(data).__name__}"
        )
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        lines = [_describe_error(e, schema) for e in exc.errors()]
        raise ConfigError(
            f"{source}: invalid {schema.__name__} config:\n  - " + "\n  - ".join(lines)
        ) from None


def resolve_config_path(path: str | Path, kind: str | None = None) -> Path:
    """Find a config file as given, or under ``configs/<kind>/`` (with or without the ``.yaml`` suffix)."""
    candidates = [Path(path)]
    if kind is not None:
        base = CONFIG_ROOT / kind
        candidates += [base / Path(path), base / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f" or under {CONFIG_ROOT / kind}" if kind else ""
    raise ConfigError(f"config file not found: {path} (looked in the current directory{where})")


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with ``yaml.safe_load``; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path, schema: type[ModelT], kind: str | None = None) -> ModelT:
    """Load and validate one YAML config file."""
    resolved = resolve_config_path(path, kind)
    return validate_config(load_yaml(resolved), schema, source=str(resolved))
