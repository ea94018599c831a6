"""LPIPS layer distance and its gradients (Triton), Zhang et al. 2018.

At each pixel, with ``r = ||f|| = sqrt(sum_c f_c^2)`` over the channels and ``n = f / (r + eps)``:

* forward:  ``d_b = mean_hw sum_c w_c (n0_c - n1_c)^2``
* backward: ``g = 2 w (n0 - n1)``; ``df0 = coef_b (g - f0 (g . f0) / (r0 (r0 + eps))) / (r0 + eps)``,
  ``df1 = coef_b (-g + f1 (g . f1) / (r1 (r1 + eps))) / (r1 + eps)`` (second terms 0 where ``r = 0``);
  ``coef_b`` the upstream gradient over H*W, applied in fp32 before the one cast at the store.

Grid: one program per (sample, block of ``BLOCK_P`` pixels of the H*W plane), sample-major. A program walks the
channels in ``[BLOCK_C, BLOCK_P]`` tiles: forward two sweeps (the norms, then the weighted squared difference),
backward three (norms, the two dot products, the stores). The forward writes one partial sum per program;
``partials.view(B, -1).sum(1)`` gives the per-sample sum in a fixed order (no float atomics). Any strides are read
in place (pixels addressed as ``(m // W) * stride_h + (m % W) * stride_w``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import TRITON_DTYPES, interpreting, plane_offset


@triton.jit
def _channel_tile(ptr, off, c, C, sc, pmask):
    """The [BLOCK_C, BLOCK_P] tile of channels ``c`` at pixel offsets ``off``, in fp32 (0 outside)."""
    mask = (c < C)[:, None] & pmask[None, :]
    return tl.load(ptr + off[None, :] + c.to(tl.int64)[:, None] * sc, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _lpips_kernel(
    f0_ptr,
    f1_ptr,
    w_ptr,
    partials_ptr,
    g0_ptr,
    g1_ptr,
    coef_ptr,
    C,
    HW,
    W,
    n_pblocks,
    s0b,
    s0c,
    s0h,
    s0w,
    s1b,
    s1c,
    s1h,
    s1w,
    t0b,
    t0c,
    t0h,
    t0w,
    t1b,
    t1c,
    t1h,
    t1w,
    eps,
    NEED_GRAD0: tl.constexpr,
    NEED_GRAD1: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // n_pblocks
    m = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    pmask = m < HW
    off0 = b * s0b + plane_offset(m, W, s0h, s0w, True)
    off1 = b * s1b + plane_offset(m, W, s1h, s1w, True)
    cs = tl.arange(0, BLOCK_C)

    ss0 = tl.zeros([BLOCK_P], dtype=tl.float32)
    ss1 = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        x0 = _channel_tile(f0_ptr, off0, c0 + cs, C, s0c, pmask)
        x1 = _channel_tile(f1_ptr, off1, c0 + cs, C, s1c, pmask)
        ss0 += tl.sum(x0 * x0, axis=0)
        ss1 += tl.sum(x1 * x1, axis=0)
    r0 = tl.sqrt(ss0)
    r1 = tl.sqrt(ss1)
    inv0 = 1.0 / (r0 + eps)
    inv1 = 1.0 / (r1 + eps)

    if NEED_GRAD0 or NEED_GRAD1:
        dot0 = tl.zeros([BLOCK_P], dtype=tl.float32)
        dot1 = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            x0 = _channel_tile(f0_ptr, off0, c, C, s0c, pmask)
            x1 = _channel_tile(f1_ptr, off1, c, C, s1c, pmask)
            w2 = 2.0 * tl.load(w_ptr + c, mask=c < C, other=0.0)
            g = w2[:, None] * (x0 * inv0[None, :] - x1 * inv1[None, :])
            dot0 += tl.sum(g * x0, axis=0)
            dot1 += tl.sum(g * x1, axis=0)
        coef = tl.load(coef_ptr + b)
        # (g . f) / (r (r + eps)); 0 where r = 0 (there f = 0), without evaluating 0 / 0
        k0 = tl.where(r0 > 0, dot0 * inv0 / tl.where(r0 > 0, r0, 1.0), 0.0)
        k1 = tl.where(r1 > 0, dot1 * inv1 / tl.where(r1 > 0, r1, 1.0), 0.0)
        sc0 = coef * inv0
        sc1 = coef * inv1
        q0 = b * t0b + plane_offset(m, W, t0h, t0w, True)
        q1 = b * t1b + plane_offset(m, W, t1h, t1w, True)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            mask = (c < C)[:, None] & pmask[None, :]
            x0 = _channel_tile(f0_ptr, off0, c, C, s0c, pmask)
            x1 = _channel_tile(f1_ptr, off1, c, C, s1c, pmask)
            w2 = 2.0 * tl.load(w_ptr + c, mask=c < C, other=0.0)
            g = w2[:, None] * (x0 * inv0[None, :] - x1 * inv1[None, :])
            cl = c.to(tl.int64)[:, None]
            if NEED_GRAD0:
                d0 = sc0[None, :] * (g - x0 * k0[None, :])
                tl.store(g0_ptr + q0[None, :] + cl * t0c, d0.to(g0_ptr.dtype.element_ty), mask=mask)
            if NEED_GRAD1:
                d1 = sc1[None, :] * (x1 * k1[None, :] - g)
                tl.store(g1_ptr + q1[None, :] + cl * t1c, d1.to(g1_ptr.dtype.element_ty), mask=mask)
    else:
        d = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            x0 = _channel_tile(f0_ptr, off0, c, C, s0c, pmask)
            x1 = _channel_tile(f1_ptr, off1, c, C, s1c, pmask)
            wc = tl.load(w_ptr + c, mask=c < C, other=0.0)
            u = x0 * inv0[None, :] - x1 * inv1[None, :]
            d += tl.sum(wc[:, None] * u * u, axis=0)
        tl.store(partials_ptr + pid, tl.sum(tl.where(pmask, d, 0.0), axis=0))


def _launch_config() -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, num_warps): small tiles for the CPU interpreter, GPU-sized otherwise."""
    if interpreting():
        return 16, 16, 1
    return 32, 64, 4


def _check(op: str, f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor) -> None:
    if f0.dim() != 4 or f1.shape != f0.shape or f1.dtype != f0.dtype:
        raise ValueError(
            f"{op}: f0, f1 must be 4-D (B, C, H, W) of one shape and dtype, got {tuple(f0.shape)} {f0.dtype} and "
            f"{tuple(f1.shape)} {f1.dtype}"
        )
    if f0.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: unsupported dtype {f0.dtype}")
    C = f0.shape[1]
    if weight.shape != (C,) or weight.dtype != torch.float32 or not weight.is_contiguous():
        raise ValueError(f"{op}: weight must be a contiguous ({C},) float32 tensor, got {weight.dtype} {weight.shape}")


def _launch(f0, f1, weight, eps, partials, g0, g1, coef, need0, need1) -> None:
    B, C, H, W = f0.shape
    BLOCK_C, BLOCK_P, num_warps = _launch_config()
    n_pblocks = triton.cdiv(H * W, BLOCK_P)
    _lpips_kernel[(B * n_pblocks,)](
        f0,
        f1,
        weight,
        partials,
        g0,
        g1,
        coef,
        C,
        H * W,
        W,
        n_pblocks,
        *f0.stride(),
        *f1.stride(),
        *g0.stride(),
        *g1.stride(),
        float(eps),
        NEED_GRAD0=need0,
        NEED_GRAD1=need1,
        BLOCK_C=BLOCK_C,
        BLOCK_P=BLOCK_P,
        num_warps=num_warps,
    )


def lpips_forward(f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``mean_hw sum_c w_c (n0 - n1)^2`` of each sample: (B,) float32."""
    _check("lpips_forward", f0, f1, weight)
    B, _, H, W = f0.shape
    n_pblocks = triton.cdiv(H * W, _launch_config()[1])
    partials = torch.empty(B * n_pblocks, dtype=torch.float32, device=f0.device)
    _launch(f0, f1, weight, eps, partials, f0, f1, partials, False, False)
    return partials.view(B, n_pblocks).sum(1) / (H * W)


def lpips_backward(
    f0: torch.Tensor,
    f1: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    coef: torch.Tensor,
    need_grad0: bool,
    need_grad1: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(df0, df1)`` in the features' dtype (empty when not needed); ``coef`` (B,) float32."""
    _check("lpips_backward", f0, f1, weight)
    B = f0.shape[0]
    if coef.shape != (B,) or coef.dtype != torch.float32 or coef.device != f0.device:
        raise ValueError(
            f"lpips_backward: coef must be a ({B},) float32 tensor on {f0.device}, "
            f"got {coef.dtype} {tuple(coef.shape)} on {coef.device}"
        )
    empty = f0.new_empty(0)
    g0 = torch.empty_like(f0) if need_grad0 else empty
    g1 = torch.empty_like(f1) if need_grad1 else empty.clone()
    if need_grad0 or need_grad1:
        _launch(
            f0,
            f1,
            weight,
            eps,
            coef,
            g0 if need_grad0 else f0,
            g1 if need_grad1 else f1,
            coef.contiguous(),
            need_grad0,
            need_grad1,
        )
    return g0, g1
