"""Fused total variation loss and gradient (Triton).

With ``dh = x[..., 1:, :] - x[..., :-1, :]`` and ``dw = x[..., :, 1:] - x[..., :, :-1]``:

* ``squared``:   ``sum dh^2 + sum dw^2``
* ``l1``:        ``sum |dh| + sum |dw|``        (subgradient ``sign(d)``, ``sign(0) = 0``)
* ``isotropic``: ``sum_{i<H-1, j<W-1} sqrt(dh_ij^2 + dw_ij^2 + eps)``

One kernel reads each tile of ``x`` once (the neighbour loads of the halo hit the cache), writes the
per-program loss partial sum (forward) or the gradient of the tile, ``coef_b * dTV/dx`` scaled in fp32 and cast
once at the store (backward). The gradient at ``(i, j)``
only needs the 4-neighbourhood (plus, for ``isotropic``, the up-right and down-left pixels that enter
the normalisers of the terms ``(i-1, j)`` and ``(i, j-1)``).

Grid: one program per (plane ``b * C + c``, tile ``[BLOCK_H, BLOCK_W]`` of the plane), flattened to a
1-D grid in plane-major order, so ``partials.view(B, -1).sum(1)`` gives the per-sample loss
deterministically (no float atomics).

Layout note: a tile walks one (b, c) plane with ``stride_h`` / ``stride_w``. For contiguous inputs the
rows of a tile are coalesced; for channels_last inputs ``stride_w == C`` so the loads are strided
(correct, but not bandwidth optimal; a channels-inner tiling would fix that).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..interface import TV_KINDS
from ._common import TRITON_DTYPES, interpreting


@triton.jit
def _sign(d):
    """sign(d) with sign(0) = 0 and sign(NaN) = NaN."""
    return tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, d * 0.0))


@triton.jit
def _tv_fwd_bwd_kernel(
    x_ptr,
    grad_ptr,
    partials_ptr,
    C,
    H,
    W,
    n_tiles_w,
    n_tiles,
    sxb,
    sxc,
    sxh,
    sxw,
    sgb,
    sgc,
    sgh,
    sgw,
    eps,
    coef_ptr,
    KIND: tl.constexpr,  # 0 squared, 1 l1, 2 isotropic
    NEED_GRAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    plane = pid // n_tiles
    tile = pid % n_tiles
    b = plane // C
    c = plane % C
    th = tile // n_tiles_w
    tw = tile % n_tiles_w

    rows = th * BLOCK_H + tl.arange(0, BLOCK_H).to(tl.int64)
    cols = tw * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)
    r = rows[:, None]
    q = cols[None, :]

    # Validity of the pixel and of each neighbour (masks, never `other=` tricks: NaN-safe).
    inside = (r < H) & (q < W)
    has_dn = inside & (r + 1 < H)
    has_up = inside & (r >= 1)
    has_rt = inside & (q + 1 < W)
    has_lf = inside & (q >= 1)

    xp = x_ptr + (b * sxb + c * sxc) + r * sxh + q * sxw
    xc = tl.load(xp, mask=inside, other=0.0).to(tl.float32)
    x_dn = tl.load(xp + sxh, mask=has_dn, other=0.0).to(tl.float32)
    x_up = tl.load(xp - sxh, mask=has_up, other=0.0).to(tl.float32)
    x_rt = tl.load(xp + sxw, mask=has_rt, other=0.0).to(tl.float32)
    x_lf = tl.load(xp - sxw, mask=has_lf, other=0.0).to(tl.float32)

    dh = x_dn - xc  # term dh at (i, j)
    dw = x_rt - xc  # term dw at (i, j)
    dh_up = xc - x_up  # term dh at (i-1, j)
    dw_lf = xc - x_lf  # term dw at (i, j-1)

    if KIND == 0:
        # L = sum dh^2 + dw^2 ; dL/dx_ij = 2 (dh_{i-1,j} - dh_ij + dw_{i,j-1} - dw_ij)
        loss = tl.where(has_dn, dh * dh, 0.0) + tl.where(has_rt, dw * dw, 0.0)
        g = (
            tl.where(has_up, dh_up, 0.0)
            - tl.where(has_dn, dh, 0.0)
            + tl.where(has_lf, dw_lf, 0.0)
            - tl.where(has_rt, dw, 0.0)
        ) * 2.0
    elif KIND == 1:
        # L = sum |dh| + |dw| ; dL/dx_ij = sign(dh_{i-1,j}) - sign(dh_ij) + sign(dw_{i,j-1}) - sign(dw_ij)
        loss = tl.where(has_dn, tl.abs(dh), 0.0) + tl.where(has_rt, tl.abs(dw), 0.0)
        g = (
            tl.where(has_up, _sign(dh_up), 0.0)
            - tl.where(has_dn, _sign(dh), 0.0)
            + tl.where(has_lf, _sign(dw_lf), 0.0)
            - tl.where(has_rt, _sign(dw), 0.0)
        )
    else:
        # L = sum_{i<H-1, j<W-1} t_ij, t_ij = sqrt(dh_ij^2 + dw_ij^2 + eps)
        # dL/dx_ij = -(dh_ij + dw_ij) / t_ij + dh_{i-1,j} / t_{i-1,j} + dw_{i,j-1} / t_{i,j-1}
        has_t = has_dn & has_rt  # term (i, j) exists
        has_t_up = has_up & has_rt  # term (i-1, j) exists
        has_t_lf = has_lf & has_dn  # term (i, j-1) exists
        t = tl.sqrt(dh * dh + dw * dw + eps)
        loss = tl.where(has_t, t, 0.0)
        if NEED_GRAD:
            x_ur = tl.load(xp - sxh + sxw, mask=has_t_up, other=0.0).to(tl.float32)
            x_dl = tl.load(xp + sxh - sxw, mask=has_t_lf, other=0.0).to(tl.float32)
            dw_up = x_ur - x_up  # dw at (i-1, j)
            dh_lf = x_dl - x_lf  # dh at (i, j-1)
            t_up = tl.sqrt(dh_up * dh_up + dw_up * dw_up + eps)
            t_lf = tl.sqrt(dh_lf * dh_lf + dw_lf * dw_lf + eps)
            g = (
                tl.where(has_t, -(dh + dw) / t, 0.0)
                + tl.where(has_t_up, dh_up / t_up, 0.0)
                + tl.where(has_t_lf, dw_lf / t_lf, 0.0)
            )
        else:
            g = loss  # unused

    tl.store(partials_ptr + pid, tl.sum(tl.sum(loss, axis=1), axis=0))

    if NEED_GRAD:
        gp = grad_ptr + (b * sgb + c * sgc) + r * sgh + q * sgw
        tl.store(gp, (g * tl.load(coef_ptr + b)).to(grad_ptr.dtype.element_ty), mask=inside)


def _launch_config() -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_W, num_warps): small tiles for the CPU interpreter, GPU-sized otherwise."""
    if interpreting():
        return 16, 32, 1
    return 32, 64, 4


def _tv_pass(x: torch.Tensor, kind: int, eps: float, coef: torch.Tensor | None) -> torch.Tensor:
    """Forward (no ``coef``): the per-sample TV (B,) fp32; backward (``coef`` (B,) fp32): ``coef_b * dTV_b/dx``
    in x's dtype (``torch.empty_like(x)``). Math is fp32 for every input dtype."""
    if x.dim() != 4:
        raise ValueError(f"tv: expected a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"tv: unsupported dtype {x.dtype}")
    if kind not in range(len(TV_KINDS)):
        raise ValueError(f"tv: kind must be the code 0..{len(TV_KINDS) - 1} of one of {TV_KINDS}, got {kind!r}")
    B, C, H, W = x.shape
    need_grad = coef is not None
    if coef is not None and (coef.shape != (B,) or coef.dtype != torch.float32 or coef.device != x.device):
        raise ValueError(
            f"tv_backward: coef must be a ({B},) float32 tensor on {x.device}, "
            f"got {coef.dtype} {tuple(coef.shape)} on {coef.device}"
        )
    grad = torch.empty_like(x) if need_grad else x  # x: a dummy pointer / strides when no gradient is written

    BLOCK_H, BLOCK_W, num_warps = _launch_config()
    n_tiles_w = triton.cdiv(W, BLOCK_W)
    n_tiles = triton.cdiv(H, BLOCK_H) * n_tiles_w
    n_programs = B * C * n_tiles
    partials = torch.empty(n_programs, dtype=torch.float32, device=x.device)
    _tv_fwd_bwd_kernel[(n_programs,)](
        x,
        grad,
        partials,
        C,
        H,
        W,
        n_tiles_w,
        n_tiles,
        *x.stride(),
        *grad.stride(),
        float(eps),
        coef.contiguous() if coef is not None else partials,
        KIND=kind,
        NEED_GRAD=need_grad,
        BLOCK_H=BLOCK_H,
        BLOCK_W=BLOCK_W,
        num_warps=num_warps,
    )
    # Programs are plane-major, planes sample-major: each sample owns C * n_tiles consecutive partials.
    return grad if need_grad else partials.view(B, -1).sum(1)  # the backward does not use the loss


def tv_forward(x: torch.Tensor, kind: int, eps: float) -> torch.Tensor:
    """Total variation of each sample of ``x`` (B, C, H, W) with any strides: (B,) float32."""
    return _tv_pass(x, kind, eps, None)


def tv_backward(x: torch.Tensor, kind: int, eps: float, coef: torch.Tensor) -> torch.Tensor:
    """``coef_b * dTV_b/dx`` in x's dtype; ``coef`` (B,) float32 (upstream gradient times the loss scale)."""
    return _tv_pass(x, kind, eps, coef)
