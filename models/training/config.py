"""``configs/training/*.yaml``: what to train on, with which encoder, loss, optimiser and selection.

The encoder's data-dependent sizes (``n_channels``, ``n_times``, ``dim``, ``n_subjects``, ``positions``) are
filled in from the data; the ``model`` section gives the rest of the architecture (see
``models.encoders``). Selection over ``selection.lambdas`` × ``selection.model_overrides`` happens on a
validation split carved from the TRAINING images; the test split is touched once, after selection.

A causal brain module (``model.causal: true``) is trained on windows that start its receptive context
earlier than ``window.tmin`` (:meth:`TrainingConfig.input_window`): it aggregates the feature frames of
``[tmin, tmax)``, each computed from samples up to its own time only, which is what the incremental decoder
computes live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from brainstream.models.config_base import StrictModel, load_config
from brainstream.models.encoders import REGISTRY, input_context
from brainstream.models.preprocessing import PreprocessingConfig

DATA_SIZE_KEYS = ("n_channels", "n_times", "dim", "n_subjects", "positions")


class DataConfig(StrictModel):
    kind: Literal["simulated", "things_meg", "things_eeg2", "xdf", "npz"] = Field(
        description="which loader reads the data (models.datasets); npz: trials saved by save_encoding_data"
    )
    paths: list[str] = Field(
        default_factory=list,
        description="recording files (simulated, xdf) or the dataset root (things_*); one entry per subject "
        "for simulated/xdf. `brainstream train --data` replaces this list.",
    )
    subjects: list[str] = Field(default_factory=list, description="subjects to load (things_*: e.g. ['1'])")
    gallery: str | None = Field(
        default=None, description="gallery folder with the target embeddings (None: the loader's default)"
    )
    loader_options: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword args of the loader"
    )


class WindowConfig(StrictModel):
    tmin: float = Field(default=-0.5, description="window start relative to image onset (s)")
    tmax: float = Field(default=1.0, description="window end relative to image onset (s)")

    @model_validator(mode="after")
    def _order(self) -> WindowConfig:
        if self.tmax <= self.tmin:
            raise ValueError(f"window tmax ({self.tmax}) must be after tmin ({self.tmin})")
        return self


class LossConfig(StrictModel):
    temperature: float = Field(default=0.07, gt=0, description="initial CLIP temperature")
    learn_temperature: bool = True
    symmetric: bool = True
    soft_clip: bool = Field(default=False, description="SoftCLIP targets instead of one-hot")
    normalise_mse_target: bool = False


class OptimConfig(StrictModel):
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=128, gt=1)
    max_epochs: int = Field(default=40, gt=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="linear warm-up (cosine only)")
    patience: int = Field(
        default=8, gt=0, description="epochs without validation improvement before stopping"
    )
    grad_clip: float | None = Field(default=1.0, gt=0)


class AugmentConfig(StrictModel):
    """Training-time augmentation (off by default; helps small data sets such as virtual subjects)."""

    time_shift: int = Field(default=0, ge=0, description="shift each trial by up to ± this many samples")
    noise_std: float = Field(default=0.0, ge=0, description="add Gaussian noise of this std (scaled units)")
    sign_flip: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="flip a trial's polarity (every channel) with this probability: a source's sign on the "
        "scalp follows its orientation, which differs between people",
    )


class SelectionConfig(StrictModel):
    val_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of training IMAGES held out")
    lambdas: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1, description="CLIP weights λ tried"
    )
    model_overrides: list[dict[str, Any]] = Field(
        default_factory=lambda: [{}],
        min_length=1,
        description="architecture variants tried (merged into model)",
    )
    metric: Literal["top5", "mean_rank", "loss"] = Field(
        default="mean_rank", description="validation criterion (mean_rank: mean normalised retrieval rank)"
    )

    @field_validator("lambdas")
    @classmethod
    def _lam_range(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"every λ must lie in [0, 1], got {bad}")
        return v


class EvaluationConfig(StrictModel):
    n_way: int = Field(default=200, ge=2, description="candidates per zero-shot retrieval trial")
    ridge: bool = Field(default=True, description="fit the ridge baseline on the same split")
    ridge_alphas: list[float] | None = Field(default=None, description="relative penalties (None: default)")
    seed: int = 0


class TrainingConfig(StrictModel):
    """A training recipe (``configs/training/*.yaml``)."""

    name: str = "encoder"
    seed: int = 0
    data: DataConfig
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    model: dict[str, Any] = Field(description="architecture (models.encoders) without the data-given sizes")
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    num_threads: int | None = Field(default=None, gt=0, description="torch CPU threads (None: torch default)")

    @model_validator(mode="after")
    def _check_model(self) -> TrainingConfig:
        name = self.model.get("name")
        if name not in REGISTRY or name == "ridge":
            trainable = [n for n in REGISTRY if n != "ridge"]
            raise ValueError(
                f"model.name must be one of {trainable} (ridge is fitted as the baseline), got {name!r}"
            )
        given = [k for k in DATA_SIZE_KEYS if k in self.model]
        if given:
            raise ValueError(f"model must not set {given}: they come from the data")
        contexts = sorted({input_context({**self.model, **ov}) for ov in self.selection.model_overrides})
        if len(contexts) > 1:
            raise ValueError(
                f"selection.model_overrides give causal receptive contexts of {contexts} samples, but the "
                "windows are cut once for all candidates: vary causal, depth, kernel_size, dilation_period "
                "and glu in separate trainings"
            )
        if contexts[0] and self.preprocessing.sfreq_out is None and self.data.kind != "npz":
            raise ValueError(
                "a causal model needs preprocessing.sfreq_out (the model rate) to cut its receptive "
                f"context of {contexts[0]} samples before window.tmin; set it"
            )
        return self

    @property
    def context(self) -> int:
        """Model-rate samples cut before ``window.tmin`` for a causal model's receptive field (else 0)."""
        return input_context({**self.model, **self.selection.model_overrides[0]})

    def input_window(self) -> tuple[float, float]:
        """``(tmin, tmax)`` of the windows the loaders cut: ``window`` widened by the context."""
        if not self.context:
            return self.window.tmin, self.window.tmax
        if self.preprocessing.sfreq_out is None:
            raise ValueError(
                "a causal model's context needs preprocessing.sfreq_out (the model rate); set it"
            )
        return self.window.tmin - self.context / float(self.preprocessing.sfreq_out), self.window.tmax


def load_training_config(path: str | Path) -> TrainingConfig:
    """Load ``configs/training/NAME.yaml`` (by path or by name)."""
    return load_config(path, TrainingConfig, kind="training")
