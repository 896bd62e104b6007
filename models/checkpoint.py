"""Encoder checkpoints: a folder with ``model.safetensors`` and ``model.yaml`` (:class:`CheckpointMeta`).

Nothing here unpickles. The weights are read with safetensors (no code execution); a file that is a pickle or
a torch zip archive is recognised by its first bytes and refused before anything parses it. The metadata is
read with ``yaml.safe_load`` and validated. The weights must match the architecture the metadata names
exactly (every key, every shape), otherwise loading stops with the list of differences.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, model_validator
from torch import nn

from brainstream.models.config_base import ConfigError, StrictModel, validate_config
from brainstream.models.encoders import build_encoder, input_context, parse_arch

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.yaml"
FORMAT = "brainstream-encoder"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, pickled or does not match its metadata."""


class CheckpointMeta(StrictModel):
    """What an encoder expects and where it came from (``model.yaml``)."""

    format: Literal["brainstream-encoder"] = FORMAT
    format_version: int = FORMAT_VERSION
    arch: dict[str, Any] = Field(description="architecture config; build_encoder(arch) rebuilds the module")
    modality: Literal["meg", "eeg"] | None = None
    ch_names: list[str] = Field(min_length=1, description="input channels in the order the model expects")
    positions: list[list[float]] | None = Field(
        default=None, description="(n_ch, 2) sensor positions in [0, 1]"
    )
    sfreq: float = Field(gt=0, description="model rate (Hz) of the input windows")
    tmin: float = Field(description="window start relative to the event (s); causal: the context's start")
    tmax: float = Field(description="window end relative to the event (s)")
    preprocessing: dict[str, Any] | None = Field(default=None, description="PreprocessingConfig as a dict")
    scaler: dict[str, Any] | None = Field(
        default=None, description="RobustScaler.to_dict() of the training data"
    )
    space: str = Field(min_length=1, description="embedding space of the targets (docs/architecture.md §6)")
    dim: int = Field(gt=0)
    subjects: list[str] = Field(default_factory=list, description="subject names in subject-index order")
    training: dict[str, Any] = Field(default_factory=dict, description="training data and recipe summary")
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CheckpointMeta:
        arch = parse_arch(self.arch, "model.yaml arch")
        if arch.n_channels != len(self.ch_names):
            raise ValueError(
                f"arch expects {arch.n_channels} channels but ch_names lists {len(self.ch_names)}"
            )
        if arch.dim != self.dim:
            raise ValueError(f"arch dim {arch.dim} differs from dim {self.dim}")
        if self.positions is not None and len(self.positions) != len(self.ch_names):
            raise ValueError(f"{len(self.positions)} positions for {len(self.ch_names)} channels")
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be greater than tmin ({self.tmin})")
        return self

    @property
    def n_times(self) -> int:
        """Samples per input window (a causal model's include its context)."""
        return int(self.arch["n_times"])

    @property
    def causal(self) -> bool:
        """A causal brain module (``arch.causal``): servable incrementally on sliding windows."""
        return bool(self.arch.get("causal", False))

    @property
    def context(self) -> int:
        """Samples at the start of each window that are only a causal model's history (0 if not causal)."""
        return input_context(self.arch)

    def check_channels(self, ch_names: list[str]) -> None:
        """Raise :class:`CheckpointError` unless ``ch_names`` equals the model's channels, in order."""
        if list(ch_names) == self.ch_names:
            return
        missing = [c for c in self.ch_names if c not in set(ch_names)]
        extra = [c for c in ch_names if c not in set(self.ch_names)]
        detail = (
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected {extra[:8]}{'...' if len(extra) > 8 else ''}"
            if missing or extra
            else "same channels in another order"
        )
        raise CheckpointError(
            f"channel mismatch between data ({len(ch_names)} channels) and checkpoint "
            f"({len(self.ch_names)}): "
            f"{detail}. Pick/reorder the data's channels to the checkpoint's ch_names or retrain."
        )


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(directory: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write ``model.safetensors`` + ``model.yaml`` into ``directory`` (created if needed).

    The weights are checked against ``meta.arch`` first, so a folder that cannot be loaded is never written.
    """
    from safetensors.torch import save

    if not isinstance(meta, CheckpointMeta):
        raise TypeError(f"meta must be a CheckpointMeta, got {type(meta).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    arch = dict(meta.arch)
    arch.pop("positions", None)  # the positions travel in the weights (a buffer) and in meta.positions
    meta = meta.model_copy(
        update={"arch": arch, "created": meta.created or datetime.now(timezone.utc).isoformat()}
    )
    _check_state(build_encoder(arch), state, directory)
    blob = save(state, metadata={"format": "pt", "brainstream": FORMAT})
    text = yaml.safe_dump(json.loads(meta.model_dump_json()), sort_keys=False)
    _atomic_write(directory / WEIGHTS_FILE, blob)
    _atomic_write(directory / META_FILE, text.encode("utf-8"))
    return directory


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing weights {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected weights {unexpected[:6]}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:6]))
        raise CheckpointError(
            f"{where}: the weights do not match the architecture in {META_FILE} ({', '.join(parts)}). "
            "The folder mixes files from different models; re-save it with save_checkpoint."
        )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = path.read_bytes()
    if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is a pickled torch file, not safetensors; it is refused because unpickling can run "
            "arbitrary code. Convert it where you trust it (torch.load(weights_only=True) + save_checkpoint)."
        )
    if len(data) < 8:
        raise CheckpointError(
            f"{path} is truncated ({len(data)} bytes); re-save or re-download the checkpoint"
        )
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or data[8:9] != b"{":
        raise CheckpointError(
            f"{path} is not a valid safetensors file (bad header): corrupt or truncated; re-save it"
        )
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); re-save or re-download the checkpoint") from None


def read_meta(directory: str | Path) -> CheckpointMeta:
    """Read and validate ``model.yaml`` only (cheap; no weights)."""
    directory = Path(directory)
    path = directory / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not an encoder checkpoint: {META_FILE} is missing")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid YAML ({exc}); the checkpoint is corrupt") from None
    try:
        return validate_config(data, CheckpointMeta, str(path))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(directory: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Load an encoder checkpoint folder; the module is returned in eval mode on the CPU."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint folder not found: {directory} (train one with `brainstream train`)"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickled = [p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = (
            f"; found {pickled}: pickled checkpoints are refused, convert with save_checkpoint"
            if pickled
            else ""
        )
        raise CheckpointError(f"{directory} is not an encoder checkpoint: {WEIGHTS_FILE} is missing{hint}")
    meta = read_meta(directory)
    state = _read_safetensors(weights)
    model = build_encoder(meta.arch)
    _check_state(model, state, directory)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta
