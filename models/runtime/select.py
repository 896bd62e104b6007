"""Pick and build an encoder runtime: ``runtime: auto`` → TensorRT on a GPU with torch-tensorrt, else ONNX
Runtime. The choice and its reason are logged (and returned by :func:`choose_backend`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from brainstream.models.cache import cache_root
from brainstream.models.runtime.base import EncoderRuntime, signature_of, weights_digest

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "compile")
WEIGHTS_META_KEY = "brainstream.weights_sha256"


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """Resolve ``requested`` to a concrete backend; returns ``(backend, reason)``."""
    from brainstream.models.runtime.tensorrt_runtime import tensorrt_unavailable_reason

    if requested not in BACKENDS:
        raise ValueError(f"unknown runtime {requested!r}; choose one of: {', '.join(BACKENDS)}")
    if requested != "auto":
        if requested == "tensorrt":
            reason = tensorrt_unavailable_reason()
            if reason:
                raise RuntimeError(
                    f"runtime 'tensorrt' was asked for but {reason}; use 'onnxruntime' or 'auto'"
                )
        return requested, "asked for in the configuration"
    reason = tensorrt_unavailable_reason()
    if reason is None:
        return "tensorrt", "auto: a CUDA GPU and torch-tensorrt are present"
    return "onnxruntime", f"auto: {reason}, so ONNX Runtime"


def onnx_for(model: Any, path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """An ONNX export of ``model``: ``path`` if it holds these very weights, else a cached export."""
    import onnx

    from brainstream.models.runtime.onnx_runtime import EXPORT_FORMAT, export_onnx

    digest = weights_digest(model)
    if path is not None and Path(path).is_file():
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if meta.get(WEIGHTS_META_KEY) == digest:
            return Path(path)
        logger.warning("%s was exported from other weights; exporting afresh", path)
    target = Path(cache_dir or cache_root() / "onnx") / f"encoder-{digest[:24]}-v{EXPORT_FORMAT}.onnx"
    if not target.is_file():
        logger.info("exporting the encoder to ONNX: %s", target)
        export_onnx(model, target, extra_metadata={WEIGHTS_META_KEY: digest})
    return target


def create_runtime(
    model: Any,
    backend: str = "auto",
    *,
    device: str | None = None,
    subject: int | None = None,
    onnx_path: str | Path | None = None,
    precision: str | None = None,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> EncoderRuntime:
    """Build the runtime for an in-memory encoder.

    Parameters
    ----------
    model : nn.Module
    backend : str
        One of :data:`BACKENDS`.
    device : str | None
        For torch / compile: default ``"cuda"`` when available, else ``"cpu"``.
    subject : int | None
        Subject layer baked into a TensorRT engine (other backends take it per call).
    onnx_path : path | None
        An existing export to reuse when it matches the weights.
    precision : str | None
        None: the backend's default (TensorRT fp16, the others fp32). TensorRT takes ``"fp16"`` or
        ``"fp32"``; torch ``"fp32"``, ``"bf16"`` or (GPU) ``"fp16"``; ONNX Runtime and compile run fp32 only.
    cache_dir : path | None
        Where exports / engines are cached (default ``~/.cache/brainstream``).
    threads : int | None
        ONNX Runtime intra-op threads.
    """
    import torch

    chosen, reason = choose_backend(backend)
    logger.info("encoder runtime: %s (%s)", chosen, reason)
    _check_precision(chosen, precision)
    sig = signature_of(model)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if chosen == "torch":
        from brainstream.models.runtime.torch_runtime import TorchRuntime

        return TorchRuntime(model, device=device, signature=sig, precision=precision or "fp32")
    if chosen == "compile":
        from brainstream.models.runtime.compile_runtime import CompileRuntime

        return CompileRuntime(model, device=device, signature=sig)
    if chosen == "tensorrt":
        from brainstream.models.runtime.tensorrt_runtime import TensorRTRuntime, cached_engine

        sub = cache_dir and Path(cache_dir) / "tensorrt"
        engine = cached_engine(model, sig, precision or "fp16", subject=subject or 0, cache_dir=sub)
        return TensorRTRuntime(engine)
    from brainstream.models.runtime.onnx_runtime import OnnxRuntime

    path = onnx_for(model, onnx_path, cache_dir and Path(cache_dir) / "onnx")
    return OnnxRuntime(path, intra_op_threads=threads)


def _check_precision(backend: str, precision: str | None) -> None:
    allowed = {"torch": ("fp32", "bf16", "fp16"), "tensorrt": ("fp16", "fp32")}.get(backend, ("fp32",))
    if precision is not None and precision not in allowed:
        raise ValueError(
            f"the {backend} runtime runs in {' or '.join(allowed)}, not {precision!r}; pick one of those, or "
            "runtime: torch for bf16"
        )


def load_runtime(
    checkpoint_dir: str | Path, backend: str = "auto", **kwargs: Any
) -> tuple[EncoderRuntime, Any]:
    """Load a checkpoint folder and build its runtime; returns ``(runtime, CheckpointMeta)``.

    An ONNX export named ``model.onnx`` inside the folder (``brainstream export``) is reused when it was
    made from the same weights. Other keyword arguments go to :func:`create_runtime`.
    """
    from brainstream.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint_dir)
    kwargs.setdefault("onnx_path", Path(checkpoint_dir) / "model.onnx")
    return create_runtime(model, backend, **kwargs), meta


__all__ = [
    "BACKENDS",
    "choose_backend",
    "create_runtime",
    "load_runtime",
    "onnx_for",
    "signature_of",
    "weights_digest",
]
