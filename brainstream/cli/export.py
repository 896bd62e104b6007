"""``brainstream export``: compile an encoder checkpoint for serving (ONNX or a TensorRT engine)."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainstream.cli import UserFacingError
from brainstream.cli._output import add_json_flag, print_json

HELP = "export an encoder checkpoint to ONNX (onnxruntime) or a TensorRT engine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="encoder checkpoint folder (model.safetensors + model.yaml)"
    )
    parser.add_argument("--backend", choices=["onnx", "tensorrt"], default="onnx", help="what to build")
    parser.add_argument(
        "--out",
        help="output file (default: CHECKPOINT/model.onnx, or CHECKPOINT/model-<gpu>.ep for tensorrt)",
    )
    parser.add_argument("--subject", type=int, default=0, help="subject layer baked into a TensorRT engine")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="TensorRT precision")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="largest batch a TensorRT engine accepts (1: static, fastest)",
    )
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from brainstream.models.checkpoint import CheckpointError, load_checkpoint
    from brainstream.models.runtime.base import signature_of, weights_digest
    from brainstream.models.runtime.select import WEIGHTS_META_KEY
    from brainstream.models.runtime.torch_runtime import TorchRuntime

    try:
        model, meta = load_checkpoint(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserFacingError(str(exc)) from None
    sig = signature_of(model)
    ckpt = Path(args.checkpoint)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, sig.n_channels, sig.n_times)).astype(np.float32)
    subject = np.full(2, args.subject, np.int64) if sig.with_subject else None
    if sig.with_subject and not 0 <= args.subject < sig.n_subjects:
        raise UserFacingError(f"--subject must be in 0..{sig.n_subjects - 1} for this checkpoint")
    reference = TorchRuntime(model).run(x, subject)

    if args.backend == "onnx":
        from brainstream.models.runtime.onnx_runtime import OnnxRuntime, export_onnx

        out = Path(args.out) if args.out else ckpt / "model.onnx"
        extra = {WEIGHTS_META_KEY: weights_digest(model), "brainstream.space": meta.space}
        export_onnx(model, out, sig, extra_metadata=extra)
        runtime = OnnxRuntime(out)
        tolerance = 1e-4
    else:
        from brainstream.models.runtime.tensorrt_runtime import (
            TensorRTRuntime,
            build_engine,
            tensorrt_unavailable_reason,
        )

        reason = tensorrt_unavailable_reason()
        if reason:
            raise UserFacingError(
                f"cannot build a TensorRT engine here: {reason}; export with --backend onnx"
            )
        import torch

        gpu = torch.cuda.get_device_name().replace(" ", "_")
        out = Path(args.out) if args.out else ckpt / f"model-{gpu}-{args.precision}.ep"
        build_engine(
            model, out, sig, args.precision, args.max_batch, args.subject if sig.with_subject else None
        )
        runtime = TensorRTRuntime(out)
        tolerance = 1e-2 if args.precision == "fp16" else 1e-3
    got = runtime.run(x, subject)
    rel = float(np.max(np.abs(got - reference)) / np.max(np.abs(reference)))
    result = {
        "path": str(out),
        "backend": args.backend,
        "signature": sig.to_dict(),
        "space": meta.space,
        "max_rel_err_vs_torch": rel,
        "tolerance": tolerance,
        "runtime": runtime.describe(),
    }
    print(f"wrote {out} ({args.backend}); max relative error against torch eager: {rel:.2e}")
    if args.json:
        print_json(result)
    if rel > tolerance:
        raise UserFacingError(
            f"the export differs from torch eager by {rel:.2e} (tolerance {tolerance:g}); do not serve it, "
            "report the model architecture"
        )
    return 0
