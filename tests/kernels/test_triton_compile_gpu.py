"""Every Triton kernel variant the launchers pick compiles for sm_80 and sm_90 without register spills.

Runs without a GPU (Triton compiles to cubin on the CPU), in the normal pass: under TRITON_INTERPRET=1 the
kernels are interpreted functions and cannot be compiled. Catches what the interpreter cannot: lowering of
tl.dot for fp16 / bf16 / tf32, layouts, register pressure.
"""

from __future__ import annotations

import os

import pytest
from _helpers import dtype_id

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="compiling needs Triton's compiler, not its interpreter"
)
triton = pytest.importorskip("triton")

from tools.triton_aot import DTYPES, compile_for, kernel_calls  # noqa: E402

# every layout on sm_90 (Hopper, the lent GPUs); the dtypes again on sm_80 (Ampere)
CASES = [(90, d, layout) for d in DTYPES for layout in ("contiguous", "channels_last", "sliced")]
CASES += [(80, d, "contiguous") for d in DTYPES]


@pytest.mark.parametrize("arch,dtype,layout", CASES, ids=[f"sm{a}-{dtype_id(d)}-{layout}" for a, d, layout in CASES])
def test_kernels_compile_without_spills(arch, dtype, layout):
    for launch in kernel_calls(dtype, layout):
        report = compile_for(launch, arch)
        assert report["local_bytes"] == 0, f"register spills: {report}"
