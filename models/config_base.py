"""Strict YAML configuration: ``yaml.safe_load`` + pydantic with unknown keys rejected.

Every config file of the project is loaded through :func:`load_config`, so every error names the file, the
key and what is allowed there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

#: Environment variable naming the user's config folders (``os.pathsep``-separated), searched before the
#: shipped defaults. ``brainstream --config-dir DIR`` sets it, so the processes a session starts inherit it.
CONFIG_PATH_ENV = "BRAINSTREAM_CONFIG_PATH"
#: The config kinds: one folder each, in the user's folders and in the shipped ``brainstream.configs``.
CONFIG_KINDS = ("devices", "pipelines", "training", "calibration", "generator")


def _shipped_root() -> Path:
    # the shipped configs are a data package: a folder in an editable install or an unpacked wheel
    with as_file(files("brainstream.configs")) as root:
        return Path(root)


CONFIG_ROOT = _shipped_root()


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


def config_search_path() -> list[Path]:
    """Folders searched for configs by name, first match wins: the user's folders, then the shipped ones."""
    user = [Path(p).expanduser() for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    return [*user, CONFIG_ROOT]


def iter_configs(kind: str) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of each config of ``kind`` on the search path; a user file shadows a shipped one."""
    seen: set[str] = set()
    for root in config_search_path():
        for path in sorted((root / kind).glob("*.yaml")):
            if path.stem not in seen:
                seen.add(path.stem)
                yield path.stem, path


def resolve_config_path(path: str | Path, kind: str | None = None) -> Path:
    """Find a config: a file path as given, else by name under ``<folder>/<kind>/`` for each folder of
    :func:`config_search_path` (with or without the ``.yaml`` suffix)."""
    given = Path(path)
    if given.is_file():
        return given
    if kind is not None:
        if kind not in CONFIG_KINDS:
            raise ConfigError(f"unknown config kind '{kind}'; kinds are: {', '.join(CONFIG_KINDS)}")
        # "configs/pipelines/demo_meg.yaml" written relative to a source checkout names a shipped config
        name = given.name if given.parent.name == kind else str(path)
        for root in config_search_path():
            for candidate in (root / kind / name, root / kind / f"{name}.yaml"):
                if candidate.is_file():
                    return candidate
        folders = ", ".join(str(root / kind) for root in config_search_path())
        known = ", ".join(n for n, _ in iter_configs(kind)) or "none"
        raise ConfigError(
            f"config not found: {path} is neither a file nor a {kind} config name (looked in {folders}); "
            f"available {kind} configs: {known}. Give a path, a name from `brainstream config list`, or add "
            f"a folder with --config-dir / {CONFIG_PATH_ENV}"
        )
    raise ConfigError(
        f"config not found: {path} is not a file; give a YAML path, or a name from `brainstream config list`"
    )


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
