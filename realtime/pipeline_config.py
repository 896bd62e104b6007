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
    """Where the bus broker lives.

    On one machine the defaults (loopback) need nothing. Across machines give ``host``: the broker binds
    ``tcp://HOST:pub_port`` / ``tcp://HOST:sub_port`` on that host and every other node connects there; a
    non-loopback host needs ``keys_dir`` (CURVE, see docs/lab_setup.md). ``pub`` / ``sub`` are full
    endpoints for the rare case the ports alone do not say enough; they cannot be combined with ``host``.
    """

    host: str | None = Field(default=None, description="address of the bus host (an IP address is safest)")
    pub_port: int = Field(default=5701, ge=1, le=65535, description="broker XSUB port publishers connect to")
    sub_port: int = Field(default=5702, ge=1, le=65535, description="broker XPUB port subscribers connect to")
    pub: str | None = None
    sub: str | None = None
    keys_dir: str | None = None

    @model_validator(mode="after")
    def _endpoints(self) -> BusConfig:
        if self.host is not None:
            host = self.host.strip()
            if not host or any(c.isspace() or c in "/[]" for c in host.strip("[]")):
                raise ValueError(
                    f"bus.host must be an address such as 10.0.0.2 or a host name; got {self.host!r}"
                )
            if self.pub_port == self.sub_port:
                raise ValueError(f"bus.pub_port and bus.sub_port must differ; both are {self.pub_port}")
            from brainstream.realtime.bus.security import is_loopback_endpoint

            pub = f"tcp://{_bracketed(host)}:{self.pub_port}"
            sub = f"tcp://{_bracketed(host)}:{self.sub_port}"
            if self.pub not in (None, pub) or self.sub not in (None, sub):  # a dump of this config re-loads
                raise ValueError("give bus.host (with pub_port / sub_port) or bus.pub / bus.sub, not both")
            if not is_loopback_endpoint(pub) and not self.keys_dir:
                raise ValueError(
                    f"bus.host {host} is reachable from other machines, so the bus needs CURVE keys: create "
                    "them with `brainstream keys generate DIR` and set bus.keys_dir: DIR"
                )
            # plain assignment would re-run this validator (validate_assignment) half-way through
            object.__setattr__(self, "pub", pub)
            object.__setattr__(self, "sub", sub)
        else:
            object.__setattr__(self, "pub", self.pub or DEFAULT_PUB_ENDPOINT)
            object.__setattr__(self, "sub", self.sub or DEFAULT_SUB_ENDPOINT)
        return self


def _bracketed(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


class PreviewConfig(StrictModel):
    rate_hz: float = Field(default=100.0, gt=0, description="decimated preview rate for the display")
    max_channels: int = Field(default=32, gt=0)
    period_s: float = Field(default=0.05, gt=0)


class RetrievalConfig(StrictModel):
    """The retrieval node's index (models/retrieval.py; docs/benchmarks.md "Growth" for the trade-offs)."""

    index: Literal["exact", "faiss-ivf", "faiss-hnsw"] = Field(
        default="exact", description="exact search up to a few 100k images; faiss-ivf beyond (faiss extra)"
    )
    dtype: Literal["float32", "float16"] = Field(default="float32", description="exact and faiss-ivf storage")
    nlist: int | None = Field(default=None, ge=1, description="faiss-ivf lists (default sqrt(N))")
    nprobe: int | Literal["auto"] = Field(
        default="auto",
        description="faiss-ivf lists probed per query; auto: the fewest reaching target_recall on "
        "validation queries",
    )
    target_recall: float = Field(default=0.95, gt=0, le=1, description="recall@top_k vs exact, for auto")
    validation_queries: str | None = Field(
        default=None, description=".npy of decoded validation embeddings to tune on (relative to this file)"
    )

    @model_validator(mode="after")
    def _ivf_settings_need_ivf(self) -> RetrievalConfig:
        if self.index != "faiss-ivf" and (self.nlist is not None or self.nprobe != "auto"):
            raise ValueError(f"nlist and nprobe apply to index: faiss-ivf, not {self.index}")
        if isinstance(self.nprobe, int) and self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1 or 'auto', got {self.nprobe}")
        return self


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
    retrieval: RetrievalConfig = RetrievalConfig()
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
