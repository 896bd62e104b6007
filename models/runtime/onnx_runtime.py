"""ONNX export (dynamic batch axis) and the ONNX Runtime backend (CPU; CUDA provider when present)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from brainstream.models.runtime.base import EncoderRuntime, EncoderSignature, signature_of

logger = logging.getLogger(__name__)

INPUT_NAME = "x"
SUBJECT_NAME = "subject"
OUTPUT_NAME = "embedding"
META_KEY = "brainstream.signature"
DEFAULT_OPSET = 17
# bumped whenever export_onnx writes a different graph for the same weights (cached exports are keyed on it)
EXPORT_FORMAT = 2


def export_onnx(
    model: Any,
    path: str | Path,
    signature: EncoderSignature | None = None,
    opset: int = DEFAULT_OPSET,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Export an encoder to ONNX with a dynamic batch axis.

    The graph has input ``x`` (batch, n_channels, n_times) float32, plus ``subject`` (batch,) int64 when the
    model has several subject layers, and output ``embedding`` (batch, dim). The signature is stored in the
    model's metadata so :class:`OnnxRuntime` can check inputs without the checkpoint. A model with an
    ``export_form()`` method (the brain module) is exported in that form: the same function, arranged for
    ONNX Runtime's CPU kernels.

    Returns
    -------
    Path
        The written file (written to a temporary name first, then renamed: never half a file).
    """
    import onnx
    import torch

    sig = signature or signature_of(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    if callable(getattr(model, "export_form", None)):  # an equivalent graph faster in ONNX Runtime
        model = model.export_form().eval()
    x = torch.zeros(2, sig.n_channels, sig.n_times)
    args: tuple = (x, torch.zeros(2, dtype=torch.long)) if sig.with_subject else (x,)
    names = [INPUT_NAME, SUBJECT_NAME] if sig.with_subject else [INPUT_NAME]
    axes = {n: {0: "batch"} for n in [*names, OUTPUT_NAME]}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter: the dynamo one needs onnxscript, not a dependency of this project
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, args, str(tmp), dynamo=False, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    meta = {META_KEY: json.dumps(sig.to_dict()), **(extra_metadata or {})}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def read_onnx_signature(path: str | Path) -> EncoderSignature:
    """The signature stored by :func:`export_onnx` (or inferred from the graph's input/output shapes)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_KEY in meta:
        return EncoderSignature(**json.loads(meta[META_KEY]))
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    out = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(shape) != 3 or len(out) != 2 or not all(shape[1:]) or not out[1]:
        raise ValueError(
            f"{path}: not a brainstream encoder export (input shape {shape}, output {out}); re-export it "
            "with `brainstream export --backend onnx`"
        )
    return EncoderSignature(shape[1], shape[2], out[1], 2 if len(proto.graph.input) > 1 else 1)


def default_threads() -> int:
    """Cores this process may use, capped at 4: batch-1 encoders gain nothing from more and the
    acquisition thread needs a core."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


class OnnxRuntime(EncoderRuntime):
    """An ONNX Runtime session for an exported encoder.

    Parameters
    ----------
    path : str | Path
        ``.onnx`` file written by :func:`export_onnx`.
    providers : list of str | None
        ONNX Runtime execution providers; default CUDA when available, then CPU.
    intra_op_threads : int | None
        Threads inside one operator (default: :func:`default_threads`).
    spinning : bool
        Let idle worker threads spin. Off by default: on a few shared cores a spinning pool steals the
        CPU the acquisition thread needs between windows, for a gain of microseconds.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"ONNX file not found: {path}; create it with `brainstream export --backend onnx`"
            )
        super().__init__(read_onnx_signature(path))
        self.path = path
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = intra_op_threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.providers = self.session.get_providers()
        self.threads = opts.intra_op_num_threads
        self._inputs = [i.name for i in self.session.get_inputs()]
        logger.info(
            "ONNX Runtime session for %s on %s (%d threads)", path.name, self.providers[0], self.threads
        )

    def _run(self, x: np.ndarray, subject: np.ndarray | None) -> np.ndarray:
        feed = {INPUT_NAME: x}
        if SUBJECT_NAME in self._inputs:
            feed[SUBJECT_NAME] = subject if subject is not None else np.zeros(x.shape[0], np.int64)
        return self.session.run([OUTPUT_NAME], feed)[0]

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "provider": self.providers[0],
            "threads": self.threads,
            "path": str(self.path),
        }
