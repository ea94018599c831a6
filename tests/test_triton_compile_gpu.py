"""Every Triton kernel variant the launchers pick compiles for sm_80 and sm_90 without register spills.

Runs without a GPU (Triton compiles to cubin on the CPU), in the normal pass: under TRITON_INTERPRET=1 the
kernels are interpreted functions and cannot be compiled. Catches what the interpreter cannot: lowering of
tl.dot for fp16 / bf16 / tf32, layouts, register pressure.
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="compiling needs Triton's compiler, not its interpreter"
)
triton = pytest.importorskip("triton")

from perceptual_kernels.backends.triton import _aot, content, gram, instance_norm, tv  # noqa: E402


def kernel_calls(dtype: torch.dtype, layout: str) -> list:
    """The launches of every op's forward and backward for one (dtype, layout), recorded without running."""
    x = torch.randn(2, 64, 16, 16, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(2, 64, 18, 19, dtype=dtype)[:, :, 1:17, 2:18]
    rows = torch.ones(2, 64)
    calls = [
        lambda: gram.gram_forward(x, 0.1, dtype),
        lambda: gram.style_loss_forward(x, torch.randn(3, 64, 64), torch.tensor([0, 2]), 0.1),
        lambda: gram.gram_backward(torch.randn(2, 64, 64, dtype=dtype), x, 0.1),
        lambda: gram.style_loss_backward(torch.rand(2), torch.randn(2, 64, 64), x),
        lambda: content.content_loss_forward(x, torch.randn(2, 64, 16, 16)),
        lambda: content.content_loss_backward(x, torch.randn(2, 64, 16, 16), torch.tensor(2.0)),
        lambda: instance_norm.instance_norm_forward(x, rows, rows, 1e-5, True),
        lambda: instance_norm.instance_norm_backward(x, x, rows, rows, rows, rows, True, True),
    ] + [
        call
        for kind in tv._KINDS
        for call in (
            lambda kind=kind: tv.tv_forward(x, kind, 1e-8),
            lambda kind=kind: tv.tv_backward(x, kind, 1e-8, torch.ones(2)),
        )
    ]
    return [launch for call in calls for launch in _aot.launches_of(call)]


DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# every layout on sm_90 (Hopper, the lent GPUs); the dtypes again on sm_80 (Ampere)
CASES = [(90, d, layout) for d in DTYPES for layout in ("contiguous", "channels_last", "sliced")]
CASES += [(80, d, "contiguous") for d in DTYPES]


@pytest.mark.parametrize("arch,dtype,layout", CASES)
def test_kernels_compile_without_spills(arch, dtype, layout):
    for launch in kernel_calls(dtype, layout):
        report = _aot.compile_for(launch, arch)
        assert report["local_bytes"] == 0, f"register spills: {report}"
