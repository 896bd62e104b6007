"""Encoder runtimes: one interface (:class:`EncoderRuntime`), several backends.

- ``torch``: eager (CPU or GPU), the reference;
- ``onnxruntime``: ONNX export with a dynamic batch axis, CPU (CUDA provider when present);
- ``tensorrt``: torch-tensorrt engines built ahead of time, cached per model, shape and GPU (``gpu`` extra);
- ``compile``: ``torch.compile`` (CUDA graphs on a GPU).

``create_runtime(model, "auto")`` / ``load_runtime(checkpoint_dir, "auto")`` pick TensorRT on a GPU with
torch-tensorrt, else ONNX Runtime. Backend modules import their heavy dependency lazily.
"""

from brainstream.models.runtime.base import EncoderRuntime, EncoderSignature, signature_of
from brainstream.models.runtime.select import (
    BACKENDS,
    choose_backend,
    create_runtime,
    load_runtime,
    onnx_for,
    weights_digest,
)

__all__ = [
    "BACKENDS",
    "EncoderRuntime",
    "EncoderSignature",
    "choose_backend",
    "create_runtime",
    "load_runtime",
    "onnx_for",
    "signature_of",
    "weights_digest",
]
