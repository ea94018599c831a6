"""Helpers shared by the Triton kernels: strides, launch sizes, precision policy."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def hw_layout(x: torch.Tensor) -> tuple[int, int, int, bool]:
    """How to address the H*W plane of a 4-D tensor ``x`` (B, C, H, W) as one index m in [0, H*W).

    Returns ``(W, stride_h, stride_w, split_hw)``. When the plane can be walked with a single stride
    (contiguous, channels_last, H == 1 or W == 1) ``split_hw`` is False and the offset of m is
    ``m * stride_w``; otherwise (a sliced plane) it is ``(m // W) * stride_h + (m % W) * stride_w``.
    """
    _, _, H, W = x.shape
    _, _, sh, sw = x.stride()
    if W == 1:
        return 1, 0, sh, False
    if H == 1 or sh == W * sw:
        return W, 0, sw, False
    return W, sh, sw, True


@triton.jit
def plane_offset(m, W, stride_h, stride_w, SPLIT_HW: tl.constexpr):
    """int64 memory offset of plane index ``m`` for the :func:`hw_layout` of a tensor."""
    if SPLIT_HW:
        offs = (m // W).to(tl.int64) * stride_h + (m % W).to(tl.int64) * stride_w
    else:
        offs = m.to(tl.int64) * stride_w
    return offs


@triton.jit
def criterion_term(d, L1: tl.constexpr):
    """(loss term, gradient factor) of a difference ``d``: ``(d^2, d)``, or for L1 ``(|d|, sign(d))`` with
    ``sign(0) = 0`` and ``sign(NaN) = NaN``."""
    if L1:
        term = tl.abs(d)
        factor = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, d))
    else:
        term = d * d
        factor = d
    return term, factor


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a small fixed number under the CPU interpreter)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot`` under the fp32 precision policy.

    fp32 inputs follow ``torch.get_float32_matmul_precision()``: ``"highest"`` gives true fp32 products
    (``"ieee"``), ``"high"`` and ``"medium"`` allow tf32. fp16/bf16 inputs use their own tensor-core
    products with fp32 accumulation (the argument is ignored for them).
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
