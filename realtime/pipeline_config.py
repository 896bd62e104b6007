"""Pipeline configs (``configs/pipelines/``): everything one live session needs, validated.

A pipeline names the input stream(s) and device profile, the windowing, the encoder checkpoint and runtime,
the gallery, the generator, the bus endpoints, the display and the recording folder (docs/architecture.md §5).
Preprocessing parameters are NOT here: they travel in the encoder checkpoint (train/serve parity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from brainstream.models.config_base import StrictModel, load_config

DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:5701"
DEFAULT_SUB_ENDPOINT = "tcp://127.0.0.1:5702"


class StreamSelector(StrictModel):
    """Which LSL stream to read; at least one of name / type / source_id."""

    name: str | None = None
    type: str | None = None
    source_id: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_field(self) -> StreamSelector:
        if not (self.name or self.type or self.source_id):
            raise ValueError("give at least one of name, type, source_id to select a stream")
        return self


class InputConfig(StrictModel):
    signal: StreamSelector
    markers: StreamSelector | None = None
    device: str = Field(description="device profile name under configs/devices/ or a path")
    buffer_s: float = Field(default=10.0, gt=0)
    clocksync: bool = True
    dejitter: bool = True
    bad_channels: list[str] = Field(
        default_factory=list,
        description="sensors to leave out today (besides the profile's bad_channels): the brain module masks "
        "them, other encoders get them interpolated",
    )
    max_missing_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="refuse a stream that lacks (or has bad) more than this fraction of the encoder's "
        "sensors",
    )


class WindowingConfig(StrictModel):
    mode: Literal["event", "sliding"] = "event"
    stride_s: float = Field(default=0.05, gt=0, description="sliding mode: time between windows")
    max_wait_s: float = Field(default=2.0, gt=0, description="event mode: drop windows this late")
    incremental: bool | None = Field(
        default=None,
        description="sliding mode: compute only each stride's new samples (needs a causal checkpoint and "
        "the torch or onnxruntime runtime); None: on exactly when the checkpoint is causal",
    )

    @model_validator(mode="after")
    def _incremental_sliding(self) -> WindowingConfig:
        if self.incremental and self.mode != "sliding":
            raise ValueError(
                "incremental: true applies to sliding windows only (event-locked windows are computed "
                "whole); set mode: sliding or drop incremental"
            )
        return self


class EncoderConfig(StrictModel):
    checkpoint: str
    runtime: Literal["auto", "torch", "onnxruntime", "tensorrt", "compile"] = "auto"
    subject_index: int = Field(default=0, ge=0, description="subject layer used for this person")
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(
        default=None,
        description="None: the runtime's default (TensorRT fp16, the others fp32); bf16 / fp16: torch on a "
        "CPU with bf16 units (batched offline work) or a GPU; embeddings keep cosine >= 0.997 with fp32",
    )


class BusConfig(StrictModel):
    pub: str = DEFAULT_PUB_ENDPOINT
    sub: str = DEFAULT_SUB_ENDPOINT
    keys_dir: str | None = None


class PreviewConfig(StrictModel):
    rate_hz: float = Field(default=100.0, gt=0, description="decimated preview rate for the display")
    max_channels: int = Field(default=32, gt=0)
    period_s: float = Field(default=0.05, gt=0)


class NodesConfig(StrictModel):
    retrieval: bool = True
    generator: bool = True
    display: bool = True
    recorder: bool = True


class PipelineConfig(StrictModel):
    name: str
    subject: str = "anonymous"
    input: InputConfig
    windowing: WindowingConfig = WindowingConfig()
    encoder: EncoderConfig
    gallery: str = Field(description="gallery folder, or 'demo' for the built-in demo gallery")
    top_k: int = Field(default=5, ge=1)
    generator: str | None = Field(default="tiny", description="generator config under configs/generator/")
    bus: BusConfig = BusConfig()
    preview: PreviewConfig = PreviewConfig()
    nodes: NodesConfig = NodesConfig()
    recording_dir: str = "runs/recordings"

    def resolve_path(self, value: str, base: Path) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    return load_config(path, PipelineConfig, kind="pipelines")
