"""After the recording: every run of a subject → adapted encoder, reference, report and subject profile."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.calibration.profile import REPORT_DIR, RUNS_DIR, subject_dir
from brainstream.calibration.protocol import ProtocolConfig
from brainstream.calibration.runs import read_run_state, run_files

logger = logging.getLogger(__name__)


def load_calibration_runs(xdfs: list[Path], config: ProtocolConfig, gallery: Any, subject_id: str):
    """All runs → (EpochsDataset with the subject's own scaler, EncodingData, quality of the first run)."""
    from brainstream.calibration.data import (
        channel_quality,
        epochs_from_filtered,
        filter_recording,
        read_run,
        to_encoding,
    )
    from brainstream.models.datasets.common import positions_for
    from brainstream.models.datasets.epochs import DatasetError

    filtered, quality, modality = [], None, None
    for path in xdfs:
        try:
            run = read_run(path)
        except DatasetError as exc:  # a run cut before anything was recorded: nothing to use
            logger.warning("skipping %s: %s", path, exc)
            continue
        if filtered and run.recording.ch_names != filtered[0].ch_names:
            raise ValueError(f"{path} has other channels than the first run; runs of one subject must match")
        f = filter_recording(run.recording, config.preprocessing)
        if quality is None:
            quality = channel_quality(run.recording, f)
        modality = run.modality
        filtered.append(f)
        del run
    if not filtered:
        raise ValueError("no calibration run holds any recorded trial; record one first")
    names = filtered[0].ch_names
    ds = epochs_from_filtered(
        filtered, config.preprocessing, config.window.tmin, config.window.tmax, gallery=gallery,
        positions=positions_for(names, modality), modality=modality,
        info={"source": [str(p) for p in xdfs], "loader": "calibration"},
    )  # fmt: skip
    if ds.positions is None:
        raise ValueError(
            f"no device profile under configs/devices lists the channels ({names[:5]}...); the brain "
            "module needs sensor positions: add a profile for this device"
        )
    return ds, to_encoding(ds, subject_id), quality


def finish_calibration(
    subject_id: str,
    config: ProtocolConfig,
    subjects_dir: str | Path,
    *,
    gallery: Any,
    virtual_subject: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], Any, dict[str, float]]:
    """Adapt on every recorded run, fit the reference (virtual subjects), write report and profile.

    Returns ``(summary JSON, SubjectProfile, seconds per stage)``.
    """
    from brainstream.calibration.adaptation import adapt, fit_reference
    from brainstream.calibration.pretrained import get_pretrained, read_info
    from brainstream.calibration.profile import save_subject_profile
    from brainstream.calibration.report import write_report

    root = subject_dir(subjects_dir, subject_id)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    pretrained = get_pretrained(config, gallery, new_subject_seed=virtual_subject, progress=progress)
    seconds["pretrained"] = time.perf_counter() - t
    runs = [(s, x) for s, x in run_files(root / RUNS_DIR) if x.is_file() and x.stat().st_size > 0]
    t = time.perf_counter()
    ds, data, quality = load_calibration_runs([x for _, x in runs], config, gallery, subject_id)
    seconds["loading"] = time.perf_counter() - t
    t = time.perf_counter()
    result = adapt(pretrained, data, config, progress=progress)
    seconds["adaptation"] = time.perf_counter() - t
    seconds.update({f"adaptation.{k}": v for k, v in result.seconds.items()})  # where the time went
    reference_info = None
    if virtual_subject is not None:
        t = time.perf_counter()
        result.reference, reference_info = fit_reference(
            pretrained, config, gallery, virtual_subject, ds.scaler, data.split("test"), progress
        )
        seconds["reference"] = time.perf_counter() - t
    summary = {
        "trials": int(len(data.X)),
        "chance_top5": result.chance_top5,
        "zero_shot": {"top5": result.zero_shot.test["top5"]},
        "ridge": {"top5": result.ridge.test["top5"]},
        "adapted": {"top1": result.adapted.test["top1"], "top5": result.adapted.test["top5"]},
        "reference": {"top5": result.reference.test["top5"]} if result.reference else None,
        "report": None,
    }
    t = time.perf_counter()
    model, meta = _profile_model(result, pretrained, data, ds, subject_id, config, summary)
    states = [read_run_state(s) for s, _ in runs]
    train = ds.splits == "train"
    report = write_report(
        root / REPORT_DIR,
        {
            "subject_id": subject_id, "protocol": config.name, "summary": summary,
            "models": {
                "zero-shot": result.zero_shot.test, "ridge": result.ridge.test,
                "adapted": result.adapted.test,
                "reference": result.reference.test if result.reference else None,
            },
            "n_way": result.n_way, "chance_top1": result.chance_top1, "chance_top5": result.chance_top5,
            "quality": quality, "evoked": ds.X[train].mean(axis=0), "times": ds.times,
            "ch_names": ds.ch_names, "image_s": config.image_s, "n_evoked": int(train.sum()),
            "learning_curve": result.learning_curve, "chosen": result.chosen.name,
            "selection": {r.name: r.val for r in [result.zero_shot, *result.candidates]},
            "runs": [
                {"run": s.get("run"), "file": x.name,
                 "trials": s.get("next_index", 0) - s.get("start_index", 0),
                 "interrupted": s.get("state") != "complete", "presenter": s.get("presenter")}
                for s, x in zip(states, [x for _, x in runs], strict=True)
            ],
            "seconds": {**seconds}, "pretrained": {"path": str(pretrained), **read_info(pretrained)},
            "reference": reference_info, "reference_factor": config.reference_factor,
            "adapted_name": result.adapted.name, "subjects_dir": str(subjects_dir),
            "soup": {k: v for k, v in (result.adapted.log.get("soup") or {}).items() if k != "fold_val"},
            "augment": {"time_shift": config.adaptation.time_shift, "noise_std": config.adaptation.noise_std},
        },
    )  # fmt: skip
    summary["report"] = str(report)
    profile = save_subject_profile(
        subjects_dir, subject_id, model=model, meta=meta, chosen_model=result.chosen.name,
        metrics={k: v for k, v in summary.items() if k != "report"}, report_path=report,
        protocol={"name": config.name, "digest": config.digest(), "trials": summary["trials"]},
        pretrained={"path": str(pretrained), "seeds": list(config.pretrained.seeds)},
        runs=[x for _, x in runs], virtual_subject=virtual_subject,
    )  # fmt: skip
    seconds["report_profile"] = time.perf_counter() - t
    return summary, profile, seconds


def _profile_model(result, pretrained: Path, data, ds, subject_id: str, config: ProtocolConfig, summary):
    """The chosen model and its checkpoint metadata (this subject's scaler, one subject layer)."""
    from brainstream.models.checkpoint import CheckpointMeta, read_meta

    pre_meta = read_meta(pretrained)
    chosen = result.chosen
    if chosen.name == "ridge":
        arch = chosen.model.config.model_dump()
    else:
        from brainstream.calibration.adaptation import one_subject_arch

        arch = one_subject_arch({k: v for k, v in pre_meta.arch.items() if k != "positions"})
    meta = CheckpointMeta(
        arch=arch,
        modality=ds.modality,
        ch_names=list(ds.ch_names),
        positions=np.round(np.asarray(ds.positions), 6).tolist(),
        sfreq=float(ds.sfreq),
        tmin=float(ds.tmin),
        tmax=float(ds.tmax),
        preprocessing=config.preprocessing.model_dump(mode="json"),
        scaler=ds.scaler.to_dict(),
        space=str(ds.space),
        dim=int(data.dim),
        subjects=[subject_id],
        training={
            "calibration": {
                "protocol": config.name,
                "chosen": chosen.name,
                "pretrained": str(pretrained),
                "n_train": result.n_train,
                "n_val": result.n_val,
                "n_test_trials": result.n_test_trials,
                "validation": chosen.val,
            },
            "data": data.summary,
        },  # fmt: skip
        metrics={k: v for k, v in summary.items() if k != "report"},
    )
    return chosen.model, meta
