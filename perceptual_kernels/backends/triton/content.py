"""Fused feature (content) loss and gradient (Triton), criterion l2 or l1.

Forward ``sum (x - target)^2`` (l2) or ``sum |x - target|`` (l1) (fp32), backward ``grad = coef * (x - target)``
(l2) or ``coef * sign(x - target)`` (l1; ``sign(0) = 0``, ``sign(NaN) = NaN``), scaled in fp32, cast
once at the store (``coef`` is the upstream gradient times the loss's scale, read from device memory), each in
one pass: a program reads its block of ``x`` and ``target`` once, writes its block of ``grad`` (backward) and
stores one fp32 partial sum; ``torch.sum`` of the partials gives the loss deterministically (no float atomics).

Two addressings:

* flat: ``x``, ``target`` and ``grad`` are non-overlapping and dense with identical strides (both
  contiguous, both channels_last, ...), so element k of memory has the same offset in all three and the
  kernel walks ``[0, numel)`` directly;
* strided: the logical linear index over (B, C, H, W) is split into (b, c, h, w) and each tensor is
  addressed with its own strides (stride 0 included: a broadcast target or x is read in place, never expanded;
  the gradient is ``torch.empty_like(x)``, dense).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..interface import CRITERIA
from ._common import TRITON_DTYPES, criterion_term, interpreting


@triton.jit
def _content_flat_kernel(
    x_ptr, t_ptr, grad_ptr, partials_ptr, N, coef_ptr, NEED_GRAD: tl.constexpr, L1: tl.constexpr, BLOCK: tl.constexpr
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    term, g = criterion_term(x - t, L1)
    tl.store(partials_ptr + pid, tl.sum(tl.where(mask, term, 0.0), axis=0))
    if NEED_GRAD:
        tl.store(grad_ptr + offs, (g * tl.load(coef_ptr)).to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _content_strided_kernel(
    x_ptr,
    t_ptr,
    grad_ptr,
    partials_ptr,
    N,
    C,
    H,
    W,
    coef_ptr,
    sxb,
    sxc,
    sxh,
    sxw,
    stb,
    stc,
    sth,
    stw,
    sgb,
    sgc,
    sgh,
    sgw,
    NEED_GRAD: tl.constexpr,
    L1: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)  # logical row-major index over (B, C, H, W)
    mask = idx < N
    w = idx % W
    rest = idx // W
    h = rest % H
    rest = rest // H
    c = rest % C
    b = rest // C
    x = tl.load(x_ptr + b * sxb + c * sxc + h * sxh + w * sxw, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + b * stb + c * stc + h * sth + w * stw, mask=mask, other=0.0).to(tl.float32)
    term, g = criterion_term(x - t, L1)
    tl.store(partials_ptr + pid, tl.sum(tl.where(mask, term, 0.0), axis=0))
    if NEED_GRAD:
        gp = grad_ptr + b * sgb + c * sgc + h * sgh + w * sgw
        tl.store(gp, (g * tl.load(coef_ptr)).to(grad_ptr.dtype.element_ty), mask=mask)


def _dense(t: torch.Tensor) -> bool:
    """True when ``t`` is non-overlapping and dense (a permutation of a contiguous layout)."""
    expected = 1
    for stride, size in sorted((s, n) for n, s in zip(t.shape, t.stride()) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_strides(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides on every dimension of size > 1 (strides of size-1 dims never matter)."""
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n != 1)


def _launch_config() -> tuple[int, int]:
    """(BLOCK, num_warps): small blocks for the CPU interpreter, GPU-sized otherwise."""
    if interpreting():
        return 1024, 1
    return 4096, 8


def _content_pass(x: torch.Tensor, target: torch.Tensor, coef: torch.Tensor | None, criterion: int) -> torch.Tensor:
    """Forward (no ``coef``): ``sum (x - target)^2`` (l2) or ``sum |x - target|`` (l1) 0-d fp32; backward (``coef``
    one fp32 element): ``coef * (x - target)`` or ``coef * sign(x - target)`` in x's dtype (``torch.empty_like(x)``).
    4-D tensors of one shape, any strides (stride 0 included); target may have another floating dtype than x."""
    if x.dim() != 4 or target.shape != x.shape:
        raise ValueError(
            f"content_loss: expected two 4-D tensors of the same shape, got {tuple(x.shape)} and {tuple(target.shape)}"
        )
    if x.dtype not in TRITON_DTYPES or target.dtype not in TRITON_DTYPES:
        raise TypeError(f"content_loss: unsupported dtypes {x.dtype}, {target.dtype}")
    if criterion not in range(len(CRITERIA)):
        raise ValueError(f"content_loss: criterion must be one of 0..{len(CRITERIA) - 1} ({CRITERIA}), got {criterion}")
    l1 = CRITERIA[criterion] == "l1"
    need_grad = coef is not None
    if coef is not None and (coef.numel() != 1 or coef.dtype != torch.float32 or coef.device != x.device):
        raise ValueError(
            f"content_loss_backward: coef must be one float32 element on {x.device}, "
            f"got {coef.dtype} {tuple(coef.shape)} on {coef.device}"
        )
    g = torch.empty_like(x) if need_grad else x  # x: a dummy pointer / strides when no gradient is written
    N = x.numel()
    BLOCK, num_warps = _launch_config()
    n_programs = triton.cdiv(N, BLOCK)
    partials = torch.empty(n_programs, dtype=torch.float32, device=x.device)
    coef_arg = coef.reshape(1) if coef is not None else partials

    flat = _dense(x) and _same_strides(x, target) and _same_strides(x, g)
    if flat:  # _same_strides + _dense(x) imply target and grad are dense over the same offsets
        _content_flat_kernel[(n_programs,)](
            x,
            target,
            g,
            partials,
            N,
            coef_arg,
            NEED_GRAD=need_grad,
            L1=l1,
            BLOCK=BLOCK,
            num_warps=num_warps,
        )
    else:
        _, C, H, W = x.shape
        _content_strided_kernel[(n_programs,)](
            x,
            target,
            g,
            partials,
            N,
            C,
            H,
            W,
            coef_arg,
            *x.stride(),
            *target.stride(),
            *g.stride(),
            NEED_GRAD=need_grad,
            L1=l1,
            BLOCK=BLOCK,
            num_warps=num_warps,
        )
    return g if need_grad else partials.sum()  # the backward does not use the loss


def content_loss_forward(x: torch.Tensor, target: torch.Tensor, criterion: int) -> torch.Tensor:
    """``sum (x - target)^2`` (criterion 0, l2) or ``sum |x - target|`` (1, l1) as a 0-d fp32 tensor."""
    return _content_pass(x, target, None, criterion)


def content_loss_backward(x: torch.Tensor, target: torch.Tensor, coef: torch.Tensor, criterion: int) -> torch.Tensor:
    """``coef * (x - target)`` (l2) or ``coef * sign(x - target)`` (l1) in x's dtype; ``coef``: one fp32 element
    (upstream gradient times the loss scale)."""
    return _content_pass(x, target, coef, criterion)
