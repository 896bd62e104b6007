"""Subject profiles: what a calibration leaves behind for ``brainstream live --subject ID``
(docs/architecture.md §7).

Layout of one subject under a subjects directory::

    SUBJECTS_DIR/<ID>/profile.yaml    what was chosen, metrics, provenance (this module's schema)
    SUBJECTS_DIR/<ID>/encoder/        a full checkpoint folder (models.checkpoint): the subject's encoder,
                                      its ``meta.scaler`` holds THIS subject's robust statistics
    SUBJECTS_DIR/<ID>/runs/           the calibration recordings (run-001.xdf, ...) and their state files
    SUBJECTS_DIR/<ID>/report/         the calibration report (Markdown + PNG plots)

Everything is read with ``yaml.safe_load`` and safetensors; a missing or broken piece raises
:class:`ProfileError` with what to do.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from brainstream.models.config_base import ConfigError, StrictModel, validate_config

PROFILE_FILE = "profile.yaml"
ENCODER_DIR = "encoder"
RUNS_DIR = "runs"
REPORT_DIR = "report"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ProfileError(Exception):
    """A subject profile is missing, incomplete or corrupt; the message says what to do."""


class ProfileFile(StrictModel):
    """Schema of ``profile.yaml``."""

    format: str = "brainstream-subject-profile"
    format_version: int = 1
    subject_id: str
    created: str
    chosen_model: str = Field(description="which candidate became the encoder (adapted:<mode> or ridge)")
    space: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    report: str | None = Field(default=None, description="report path relative to the subject folder")
    protocol: dict[str, Any] = Field(default_factory=dict, description="name, digest, trials")
    pretrained: dict[str, Any] = Field(default_factory=dict)
    runs: list[str] = Field(default_factory=list, description="recordings used, relative paths")
    virtual_subject: int | None = None


@dataclass
class SubjectProfile:
    """A loaded subject profile. ``encoder_dir`` is a checkpoint folder (``models.checkpoint`` format)."""

    subject_id: str
    root: Path
    encoder_dir: Path
    chosen_model: str
    space: str
    metrics: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    runs: list[Path] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    virtual_subject: int | None = None

    @property
    def scaler(self):
        """This subject's ``RobustScaler`` (from the encoder checkpoint's metadata)."""
        from brainstream.models.checkpoint import read_meta
        from brainstream.models.preprocessing import RobustScaler

        return RobustScaler.from_dict(read_meta(self.encoder_dir).scaler)


def check_subject_id(subject_id: str) -> str:
    subject_id = str(subject_id)
    if not _ID.match(subject_id):
        raise ProfileError(
            f"invalid subject id {subject_id!r}: use letters, digits, '_', '-' or '.' (up to 64, no '/'), "
            "e.g. S01"
        )
    return subject_id


def subject_dir(subjects_dir: str | Path, subject_id: str) -> Path:
    return Path(subjects_dir).expanduser() / check_subject_id(subject_id)


def load_subject_profile(subjects_dir: str | Path, subject_id: str) -> SubjectProfile:
    """Load ``SUBJECTS_DIR/<ID>``; the encoder's metadata is validated and must carry a scaler.

    Raises
    ------
    ProfileError
        No such subject, no finished calibration, or a corrupt profile / encoder.
    """
    from brainstream.models.checkpoint import CheckpointError, read_meta

    root = subject_dir(subjects_dir, subject_id)
    path = root / PROFILE_FILE
    if not root.is_dir():
        raise ProfileError(f"no subject {subject_id!r} in {Path(subjects_dir).expanduser()}")
    if not path.is_file():
        raise ProfileError(
            f"{root} has no {PROFILE_FILE}: the calibration of {subject_id!r} did not finish (its recordings "
            f"are in {root / RUNS_DIR}; rerunning the same calibrate command resumes it)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        prof = validate_config(data, ProfileFile, str(path))
    except (yaml.YAMLError, UnicodeDecodeError, ConfigError) as exc:
        raise ProfileError(f"{path} is corrupt ({exc}); recalibrate or restore it from a backup") from None
    if prof.subject_id != subject_id:
        raise ProfileError(f"{path} belongs to subject {prof.subject_id!r}, not {subject_id!r}")
    encoder = root / ENCODER_DIR
    try:
        meta = read_meta(encoder)
    except CheckpointError as exc:
        raise ProfileError(f"the encoder of subject {subject_id!r} is unusable: {exc}") from None
    if not (encoder / "model.safetensors").is_file():
        raise ProfileError(f"{encoder} has no model.safetensors; recalibrate subject {subject_id!r}")
    if meta.scaler is None:
        raise ProfileError(f"{encoder}/model.yaml carries no scaler statistics; recalibrate {subject_id!r}")
    return SubjectProfile(
        subject_id=subject_id,
        root=root,
        encoder_dir=encoder,
        chosen_model=prof.chosen_model,
        space=prof.space,
        metrics=prof.metrics,
        report_path=(root / prof.report) if prof.report else None,
        runs=[root / r for r in prof.runs],
        protocol=prof.protocol,
        pretrained=prof.pretrained,
        created=prof.created,
        virtual_subject=prof.virtual_subject,
    )


def save_subject_profile(
    subjects_dir: str | Path,
    subject_id: str,
    *,
    model: Any,
    meta: Any,
    chosen_model: str,
    metrics: dict[str, Any] | None = None,
    report_path: str | Path | None = None,
    protocol: dict[str, Any] | None = None,
    pretrained: dict[str, Any] | None = None,
    runs: list[str | Path] | None = None,
    virtual_subject: int | None = None,
) -> SubjectProfile:
    """Write the subject's encoder checkpoint and ``profile.yaml``; returns the loaded profile.

    The new encoder is written next to the old one and swapped in, and ``profile.yaml`` is replaced
    atomically, so an interrupted save leaves the previous profile usable.
    """
    from brainstream.models.checkpoint import save_checkpoint

    root = subject_dir(subjects_dir, subject_id)
    root.mkdir(parents=True, exist_ok=True)
    if meta.scaler is None:
        raise ProfileError("the encoder metadata carries no scaler: a subject profile needs its statistics")
    tmp = Path(tempfile.mkdtemp(prefix=".encoder-", dir=root))
    try:
        save_checkpoint(tmp, model, meta)
        old = root / ENCODER_DIR
        if old.exists():
            trash = root / f".encoder-old-{os.getpid()}"
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def rel(p: str | Path) -> str:
        p = Path(p)
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(p)

    prof = ProfileFile(
        subject_id=subject_id,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        chosen_model=chosen_model,
        space=meta.space,
        metrics=metrics or {},
        report=rel(report_path) if report_path else None,
        protocol=protocol or {},
        pretrained=pretrained or {},
        runs=[rel(r) for r in runs or []],
        virtual_subject=virtual_subject,
    )
    text = yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False)
    fd, tmp_file = tempfile.mkstemp(dir=root, prefix=f".{PROFILE_FILE}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp_file, root / PROFILE_FILE)
    return load_subject_profile(subjects_dir, subject_id)
