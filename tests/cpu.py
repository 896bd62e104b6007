"""CPU features some tests need, and the environment that makes torch run as a CPU without them.

A test that needs native bf16 is marked :data:`needs_native_bf16` and skips with torch's reason elsewhere,
so nothing in the suite depends on the CPU model. :data:`AS_AVX2_CPU` is the environment under which a
subprocess's torch dispatches as an AVX2-only CPU (no bf16 units): the no-bf16 path tested for real on a
machine that has them.
"""

from __future__ import annotations

import os

import pytest

from brainstream.models.runtime.precision import cpu_bf16_missing_reason

BF16_MISSING = cpu_bf16_missing_reason()

needs_native_bf16 = pytest.mark.skipif(
    BF16_MISSING is not None, reason=f"needs native bf16 on the CPU: {BF16_MISSING}"
)

AS_AVX2_CPU = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "QT_QPA_PLATFORM": "offscreen"}
