"""What a reduced precision needs from the machine, read from what torch reports about it.

bfloat16 pays only where the processor multiplies bf16 natively (x86: AVX512-BF16 or AMX-BF16; Arm: the BF16
extension): elsewhere torch and oneDNN emulate it and it runs *slower* than fp32 (a 2048² bf16 product took
minutes on an AVX2-only EPYC). So a bf16 request on such a CPU is refused with what to use instead, the way
fp16 on a CPU is, and nothing picks bf16 on its own unless :func:`native_bf16` says so.

Three sources are read, and all must agree, so that the answer is what torch will actually run:

- ``torch.cpu.get_capabilities()``: what the processor has (cpuinfo);
- ``torch.backends.cpu.get_cpu_capability()``: the kernels ATen dispatches to (``ATEN_CPU_CAPABILITY=avx2``
  makes torch run as an AVX2 CPU, which is how the no-bf16 path is tested on a machine that has bf16);
- ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: whether oneDNN (the convolutions) runs bf16 at all
  (``ONEDNN_MAX_CPU_ISA`` lowers it).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

PRECISIONS = ("fp32", "bf16", "fp16")

# ATen capabilities under which x86 bf16 kernels are the native ones
_X86_BF16_DISPATCH = ("AVX512", "AVX512_BF16", "AMX")


def bf16_missing_reason(capabilities: Mapping[str, object], dispatch: str, onednn_bf16: bool) -> str | None:
    """Why this CPU cannot run bf16 natively (None when it can), from torch's three reports.

    Parameters
    ----------
    capabilities : Mapping
        ``torch.cpu.get_capabilities()``: processor features (``architecture``, ``avx512_bf16``, ...).
    dispatch : str
        ``torch.backends.cpu.get_cpu_capability()``: the ATen kernels in use (``"AVX2"``, ``"AVX512"``...).
    onednn_bf16 : bool
        ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``.
    """
    arch = str(capabilities.get("architecture", "unknown"))
    name = str(capabilities.get("cpu_name", "this CPU"))
    if arch in ("x86_64", "x86"):
        units = [f for f in ("avx512_bf16", "amx_bf16") if capabilities.get(f)]
        if not units:
            return f"{name} has neither AVX512-BF16 nor AMX-BF16 (bf16 would be emulated, slower than fp32)"
        if dispatch.upper() not in _X86_BF16_DISPATCH:
            return (
                f"torch runs {dispatch} kernels on {name} (ATEN_CPU_CAPABILITY or the build), not the "
                "AVX512 ones its bf16 units need (bf16 would be emulated, slower than fp32)"
            )
    elif arch in ("arm64", "aarch64"):
        if not (capabilities.get("bf16") or capabilities.get("sve_bf16")):
            return f"{name} has no BF16 extension (bf16 would be emulated, slower than fp32)"
    else:
        return f"torch reports no native bf16 arithmetic on a {arch} CPU"
    if not onednn_bf16:
        return "oneDNN runs no bf16 kernels here (ONEDNN_MAX_CPU_ISA or the build)"
    return None


@lru_cache(maxsize=1)
def cpu_bf16_missing_reason() -> str | None:
    """Why this process's torch cannot run bf16 natively on the CPU; None when it can."""
    import torch

    return bf16_missing_reason(
        torch.cpu.get_capabilities(),
        torch.backends.cpu.get_cpu_capability(),
        bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    )


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 runs natively on ``device`` (what an automatic choice must check before picking it)."""
    return precision_unavailable_reason("bf16", device) is None


def precision_unavailable_reason(precision: str, device: str = "cpu") -> str | None:
    """Why torch cannot run ``precision`` well on ``device`` (None when it can)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if device.startswith("cuda"):
        import torch

        if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported(False):
            return f"{torch.cuda.get_device_name()} has no native bf16"
        return None
    if precision == "fp16":
        return "fp16 needs a GPU (CPU fp16 convolutions are emulated and slow)"
    return cpu_bf16_missing_reason()


def check_precision(precision: str, device: str = "cpu") -> None:
    """Raise a ``ValueError`` that says what to use instead when ``precision`` cannot run on ``device``."""
    reason = precision_unavailable_reason(precision, device)
    if reason is None:
        return
    if device.startswith("cuda"):
        instead = "use 'fp16' or 'fp32' on this GPU"
    else:
        other = "'bf16' or 'fp32'" if native_bf16(device) else "'fp32'"
        instead = f"on this CPU use {other} (ONNX Runtime fp32 is the fastest CPU runtime), or a GPU"
    raise ValueError(f"precision {precision!r} cannot run here: {reason}; {instead}")


__all__ = [
    "PRECISIONS",
    "bf16_missing_reason",
    "check_precision",
    "cpu_bf16_missing_reason",
    "native_bf16",
    "precision_unavailable_reason",
]
