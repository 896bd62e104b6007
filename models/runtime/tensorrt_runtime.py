"""TensorRT backend through torch-tensorrt (the ``gpu`` extra): ahead-of-time engines, cached on disk.

``torch_tensorrt.compile(model, ir="dynamo", inputs=[Input(min, opt, max)])`` builds the engine;
``torch_tensorrt.save(..., output_format="exported_program")`` writes it and ``torch_tensorrt.load(path)
.module()`` reads it back (the documented AOT path). An engine is only valid for the GPU model and the
input shape it was built for, so the cache key holds both (and the precision, the subject index, the
torch-tensorrt version and a hash of the weights). The subject index is baked into the engine: a live
session decodes one person.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.cache import cache_root
from brainstream.models.runtime.base import EncoderRuntime, EncoderSignature, signature_of, weights_digest

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can run here, else why not (for logs and test skips)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch (TensorRT needs one)"
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return "torch-tensorrt is not installed (pip install 'brainstream[gpu]')"
    return None


def default_cache_dir() -> Path:
    return cache_root() / "tensorrt"


def _fixed_subject(model: Any, subject: int | None) -> Any:
    import torch

    class _WithSubject(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, index: int) -> None:
            super().__init__()
            self.inner = inner
            self.index = index

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            subj = torch.full((x.shape[0],), self.index, dtype=torch.long, device=x.device)
            return self.inner(x, subj)

    return model if subject is None else _WithSubject(model, subject)


def engine_key(model: Any, sig: EncoderSignature, precision: str, max_batch: int, subject: int | None) -> str:
    """Cache key: weights hash, input shape, precision, batch range, subject, GPU name, versions."""
    import torch
    import torch_tensorrt

    desc = {
        "weights": weights_digest(model)[:16],
        "shape": [sig.n_channels, sig.n_times],
        "precision": precision,
        "max_batch": max_batch,
        "subject": subject,
        "gpu": torch.cuda.get_device_name(),
        "capability": list(torch.cuda.get_device_capability()),
        "torch_tensorrt": torch_tensorrt.__version__,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]


def build_engine(
    model: Any,
    path: str | Path,
    signature: EncoderSignature | None = None,
    precision: str = "fp16",
    max_batch: int = 1,
    subject: int | None = None,
) -> Path:
    """Compile ``model`` with torch-tensorrt for batch 1..``max_batch`` and save it to ``path``.

    The default, batch 1 only, gives a static-shape engine (live decoding encodes one window at a time);
    :class:`TensorRTRuntime` splits larger batches.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise RuntimeError(f"cannot build a TensorRT engine: {reason}; use the onnxruntime backend instead")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    import torch
    import torch_tensorrt

    sig = signature or signature_of(model)
    if sig.with_subject and subject is None:
        raise ValueError(
            f"the model has {sig.n_subjects} subject layers: say which one to build the engine for"
        )
    module = _fixed_subject(model.eval().cuda(), subject if sig.with_subject else None)
    shape = (sig.n_channels, sig.n_times)
    if max_batch == 1:  # static shape: the live path is batch 1, and a static engine is the fastest
        spec = torch_tensorrt.Input(shape=(1, *shape), dtype=torch.float32)
    else:
        spec = torch_tensorrt.Input(
            min_shape=(1, *shape), opt_shape=(1, *shape), max_shape=(max_batch, *shape), dtype=torch.float32
        )
    kwargs: dict[str, Any] = {"ir": "dynamo", "inputs": [spec], "min_block_size": 1}
    params = inspect.signature(torch_tensorrt.dynamo.compile).parameters
    if precision == "fp16":
        # the way to ask for fp16 kernels changed across releases: enabled_precisions (+ use_explicit_typing
        # off, where that exists) until it was deprecated, then enable_autocast
        if "enabled_precisions" in params:
            kwargs["enabled_precisions"] = {torch.float16, torch.float32}
            if "use_explicit_typing" in params:
                kwargs["use_explicit_typing"] = False
        elif "enable_autocast" in params:
            kwargs["enable_autocast"] = True
            if "autocast_low_precision_type" in params:
                kwargs["autocast_low_precision_type"] = torch.float16
    trt_module = torch_tensorrt.compile(module, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_params = inspect.signature(torch_tensorrt.save).parameters
    # releases renamed `inputs` to `arg_inputs`; an Input with min/max keeps the batch axis dynamic on save
    key = "arg_inputs" if "arg_inputs" in save_params else "inputs"
    example = [torch.zeros(1, *shape, device="cuda")] if max_batch == 1 else [spec]
    torch_tensorrt.save(trt_module, str(tmp), output_format="exported_program", **{key: example})
    os.replace(tmp, path)
    sidecar = {**sig.to_dict(), "precision": precision, "max_batch": max_batch, "subject": subject}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def cached_engine(
    model: Any,
    signature: EncoderSignature | None = None,
    precision: str = "fp16",
    max_batch: int = 1,
    subject: int | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Path of the engine for this model/shape/GPU, building it once."""
    sig = signature or signature_of(model)
    subject = subject if sig.with_subject else None
    key = engine_key(model, sig, precision, max_batch, subject)
    path = Path(cache_dir or default_cache_dir()) / f"encoder-{key}.ep"
    if not path.is_file():
        logger.info("building TensorRT engine %s (once per model, shape and GPU)", path.name)
        build_engine(model, path, sig, precision, max_batch, subject)
    return path


class TensorRTRuntime(EncoderRuntime):
    """Run a saved torch-tensorrt engine (``.ep`` written by :func:`build_engine`)."""

    name = "tensorrt"

    def __init__(self, path: str | Path) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"TensorRT runtime unavailable: {reason}")
        import torch
        import torch_tensorrt

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(
                f"TensorRT engine {path} (and its {meta_path.name}) not found; build it with "
                "`brainstream export --backend tensorrt`"
            )
        meta = json.loads(meta_path.read_text())
        sig = EncoderSignature(meta["n_channels"], meta["n_times"], meta["dim"], meta.get("n_subjects", 1))
        super().__init__(sig)
        self.path, self.precision = path, meta.get("precision", "fp16")
        self.subject, self.max_batch = meta.get("subject"), int(meta.get("max_batch", 1))
        self.default_subject = self.subject or 0
        self.module = torch_tensorrt.load(str(path)).module()
        self._torch = torch
        self.device_name = torch.cuda.get_device_name()

    def _check_subject(self, subject: int | np.ndarray | None, batch: int) -> np.ndarray | None:
        if subject is not None and self.subject is not None and np.any(np.asarray(subject) != self.subject):
            raise ValueError(
                f"this engine was built for subject {self.subject}; build another with --subject for "
                f"{np.unique(subject).tolist()}"
            )
        return None

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        torch = self._torch
        if x.shape[0] > self.max_batch:
            return np.concatenate(
                [self._run(x[i : i + self.max_batch], None) for i in range(0, len(x), self.max_batch)]
            )
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).cuda(non_blocking=True))
            return out.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": self.device_name,
            "precision": self.precision,
            "path": str(self.path),
        }
