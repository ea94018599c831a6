"""Fused (conditional) instance norm with optional ReLU (Triton).

For every (b, c) plane of ``x`` (B, C, H, W), with ``N = H * W``::

    mean = sum_hw x / N,    var = sum_hw (x - mean)^2 / N,    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = gamma_bc * xhat + beta_bc           (then max(y, 0) with ``relu``)

Backward, with ``g = dy * [y > 0]`` (``relu``; y recomputed from x, never stored; a NaN y lets the
gradient through, as torch.relu's backward does) or ``g = dy``::

    dbeta_bc  = sum_hw g
    dgamma_bc = sum_hw g * xhat
    dx        = gamma_bc * rstd * (g - dbeta_bc / N - xhat * dgamma_bc / N)

Design (both kernels):

* Grid: 1-D, one program per (sample b, block of ``BLOCK_C`` channels); every plane is reduced inside a
  single program, so all sums are deterministic (no atomics) and the per-(b, c) results are plain stores.
* Tile ``[BLOCK_C, BLOCK_M]``: ``BLOCK_C`` channels x ``BLOCK_M`` plane positions of one sample. NCHW
  inputs (plane contiguous) use ``BLOCK_C = 1`` (or a few channels when planes are small); channels_last
  inputs (channels contiguous) use ``BLOCK_C = 8..32`` so each tile row is a coalesced run of channels.
  Reductions always run along the M axis.
* Forward: pass 1 walks the plane in ``BLOCK_M`` steps keeping per-lane Welford (mean, M2) accumulators;
  the lanes are merged at the end with Chan's formula. Pass 2 re-reads x and writes y.
* Backward: pass 1 accumulates ``sum g`` and ``sum g * xhat`` per lane; pass 2 re-reads x and dy and
  writes dx.
* Math is fp32 for every input dtype; offsets are int64 (b * stride_b and c * stride_c may pass 2^31).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import TRITON_DTYPES, hw_layout, interpreting, num_sms, plane_offset


@triton.jit
def _param_offsets(b, chans, index_ptr, s_row, HAS_INDEX: tl.constexpr):
    """Offsets of the affine parameters of sample ``b``: row ``index[b]`` (or ``b``) of a (rows, C) table."""
    if HAS_INDEX:
        row = tl.load(index_ptr + b).to(tl.int64)
    else:
        row = b
    return row * s_row + chans


@triton.jit
def _instance_norm_fwd_kernel(
    x_ptr,
    y_ptr,
    gamma_ptr,
    beta_ptr,
    index_ptr,
    mean_ptr,
    rstd_ptr,
    C,
    HW,
    n_cblocks,
    s_row,
    sxb,
    sxc,
    x_W,
    sxh,
    sxw,
    syb,
    syc,
    y_W,
    syh,
    syw,
    eps,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    HAS_INDEX: tl.constexpr,
    RELU: tl.constexpr,
    X_SPLIT_HW: tl.constexpr,
    Y_SPLIT_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Statistics, normalisation, per-sample affine and optional ReLU for BLOCK_C planes of one sample."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // n_cblocks
    chans = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    mask_c = chans < C
    lanes = tl.arange(0, BLOCK_M)
    x_rows = x_ptr + b * sxb + (chans * sxc)[:, None]
    y_rows = y_ptr + b * syb + (chans * syc)[:, None]

    # Pass 1: per-lane Welford. At step k every valid lane has seen exactly k + 1 values (only the last
    # step is partial), so the update weight 1 / (k + 1) is a scalar.
    lane_mean = tl.zeros([BLOCK_C, BLOCK_M], dtype=tl.float32)
    lane_m2 = tl.zeros([BLOCK_C, BLOCK_M], dtype=tl.float32)
    for start in range(0, HW, BLOCK_M):
        m = start + lanes
        mask = mask_c[:, None] & (m < HW)[None, :]
        offs = plane_offset(m, x_W, sxh, sxw, X_SPLIT_HW)[None, :]
        x = tl.load(x_rows + offs, mask=mask, other=0.0).to(tl.float32)
        w = 1.0 / (start // BLOCK_M + 1)
        delta = x - lane_mean
        new_mean = lane_mean + delta * w
        lane_m2 = tl.where(mask, lane_m2 + delta * (x - new_mean), lane_m2)
        lane_mean = tl.where(mask, new_mean, lane_mean)

    # Chan merge of the lanes: n_l values per lane, mean = sum n_l mean_l / N,
    # M2 = sum M2_l + sum n_l (mean_l - mean)^2.
    n_lane = (tl.maximum(HW - lanes + (BLOCK_M - 1), 0) // BLOCK_M).to(tl.float32)[None, :]
    mean = tl.sum(lane_mean * n_lane, axis=1) / HW
    dev = tl.where(n_lane > 0, lane_mean - mean[:, None], 0.0)
    var = (tl.sum(lane_m2, axis=1) + tl.sum(n_lane * dev * dev, axis=1)) / HW
    rstd = 1.0 / tl.sqrt(var + eps)

    bc = b * C + chans
    tl.store(mean_ptr + bc, mean, mask=mask_c)
    tl.store(rstd_ptr + bc, rstd, mask=mask_c)

    prow = _param_offsets(b, chans, index_ptr, s_row, HAS_INDEX)
    if HAS_GAMMA:
        scale = tl.load(gamma_ptr + prow, mask=mask_c, other=1.0) * rstd
    else:
        scale = rstd
    if HAS_BETA:
        shift = tl.load(beta_ptr + prow, mask=mask_c, other=0.0)
    else:
        shift = tl.zeros([BLOCK_C], dtype=tl.float32)

    # Pass 2: y = (x - mean) * gamma * rstd + beta  [then ReLU; NaN stays NaN].
    for start in range(0, HW, BLOCK_M):
        m = start + lanes
        mask = mask_c[:, None] & (m < HW)[None, :]
        x_offs = plane_offset(m, x_W, sxh, sxw, X_SPLIT_HW)[None, :]
        x = tl.load(x_rows + x_offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
        if RELU:
            y = tl.where(y < 0.0, 0.0, y)
        y_offs = plane_offset(m, y_W, syh, syw, Y_SPLIT_HW)[None, :]
        tl.store(y_rows + y_offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _instance_norm_bwd_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    mean_ptr,
    rstd_ptr,
    gamma_ptr,
    beta_ptr,
    index_ptr,
    dgamma_ptr,
    dbeta_ptr,
    C,
    HW,
    n_cblocks,
    s_row,
    sdyb,
    sdyc,
    dy_W,
    sdyh,
    sdyw,
    sxb,
    sxc,
    x_W,
    sxh,
    sxw,
    sdxb,
    sdxc,
    dx_W,
    sdxh,
    sdxw,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    HAS_INDEX: tl.constexpr,
    RELU: tl.constexpr,
    STORE_AFFINE_GRAD: tl.constexpr,
    DY_SPLIT_HW: tl.constexpr,
    X_SPLIT_HW: tl.constexpr,
    DX_SPLIT_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Plane sums of g and g * xhat, then dx = gamma * rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // n_cblocks
    chans = (pid % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    mask_c = chans < C
    lanes = tl.arange(0, BLOCK_M)
    dy_rows = dy_ptr + b * sdyb + (chans * sdyc)[:, None]
    x_rows = x_ptr + b * sxb + (chans * sxc)[:, None]
    dx_rows = dx_ptr + b * sdxb + (chans * sdxc)[:, None]

    bc = b * C + chans
    mean = tl.load(mean_ptr + bc, mask=mask_c, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + bc, mask=mask_c, other=0.0)
    prow = _param_offsets(b, chans, index_ptr, s_row, HAS_INDEX)
    if HAS_GAMMA:
        scale = tl.load(gamma_ptr + prow, mask=mask_c, other=1.0) * rstd
    else:
        scale = rstd
    if HAS_BETA:
        shift = tl.load(beta_ptr + prow, mask=mask_c, other=0.0)[:, None]
    else:
        shift = tl.zeros([BLOCK_C, 1], dtype=tl.float32)
    rstd = rstd[:, None]
    scale = scale[:, None]

    # Pass 1: per-lane sums of g and g * xhat. The ReLU mask recomputes y exactly as the forward does and,
    # like torch.relu's backward, passes the gradient where y is NaN (mask = not (y <= 0)).
    acc_g = tl.zeros([BLOCK_C, BLOCK_M], dtype=tl.float32)
    acc_gx = tl.zeros([BLOCK_C, BLOCK_M], dtype=tl.float32)
    for start in range(0, HW, BLOCK_M):
        m = start + lanes
        mask = mask_c[:, None] & (m < HW)[None, :]
        x_offs = plane_offset(m, x_W, sxh, sxw, X_SPLIT_HW)[None, :]
        dy_offs = plane_offset(m, dy_W, sdyh, sdyw, DY_SPLIT_HW)[None, :]
        xc = tl.load(x_rows + x_offs, mask=mask, other=0.0).to(tl.float32) - mean
        g = tl.load(dy_rows + dy_offs, mask=mask, other=0.0).to(tl.float32)
        if RELU:
            g = tl.where(xc * scale + shift <= 0.0, 0.0, g)
        acc_g += tl.where(mask, g, 0.0)
        acc_gx += tl.where(mask, g * (xc * rstd), 0.0)
    sum_g = tl.sum(acc_g, axis=1)
    sum_gx = tl.sum(acc_gx, axis=1)
    if STORE_AFFINE_GRAD:
        tl.store(dbeta_ptr + bc, sum_g, mask=mask_c)
        tl.store(dgamma_ptr + bc, sum_gx, mask=mask_c)
    mean_g = (sum_g / HW)[:, None]
    mean_gx = (sum_gx / HW)[:, None]

    # Pass 2: dx = gamma * rstd * (g - mean(g) - xhat * mean(g * xhat)).
    for start in range(0, HW, BLOCK_M):
        m = start + lanes
        mask = mask_c[:, None] & (m < HW)[None, :]
        x_offs = plane_offset(m, x_W, sxh, sxw, X_SPLIT_HW)[None, :]
        dy_offs = plane_offset(m, dy_W, sdyh, sdyw, DY_SPLIT_HW)[None, :]
        xc = tl.load(x_rows + x_offs, mask=mask, other=0.0).to(tl.float32) - mean
        g = tl.load(dy_rows + dy_offs, mask=mask, other=0.0).to(tl.float32)
        if RELU:
            g = tl.where(xc * scale + shift <= 0.0, 0.0, g)
        dx = scale * (g - mean_g - (xc * rstd) * mean_gx)
        dx_offs = plane_offset(m, dx_W, sdxh, sdxw, DX_SPLIT_HW)[None, :]
        tl.store(dx_rows + dx_offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _launch_config(x: torch.Tensor) -> tuple[int, int, int, int]:
    """``(BLOCK_C, BLOCK_M, n_cblocks, num_warps)`` for the tiles of ``x``, chosen from its strides.

    Channels-inner layouts (channels_last: ``stride_c`` below the plane stride) get ``BLOCK_C`` up to 32
    channels per tile row so loads are coalesced along C; plane-inner layouts (NCHW) get ``BLOCK_C = 1``,
    or a few channels when a whole plane is smaller than the tile.
    """
    B, C, H, W = x.shape
    HW = H * W
    _, _, stride_m, _ = hw_layout(x)
    tile = 256 if interpreting() else 2048
    hw_p2 = max(triton.next_power_of_2(HW), 16)
    c_p2 = triton.next_power_of_2(C)
    channels_inner = C > 1 and x.stride(1) < stride_m
    if channels_inner:
        block_c = min(c_p2, 32)
        # Keep enough programs in flight on the GPU (down to 8 channels per tile row).
        while block_c > 8 and B * triton.cdiv(C, block_c) < 2 * num_sms(x.device):
            block_c //= 2
        block_m = min(hw_p2, max(tile // block_c, 16))
    else:
        block_m = min(hw_p2, tile)
        block_c = min(c_p2, max(tile // block_m, 1))
        while block_c > 1 and B * triton.cdiv(C, block_c) < 2 * num_sms(x.device):
            block_c //= 2
    num_warps = 4 if block_c * block_m <= 1024 else 8
    if interpreting():
        num_warps = 1
    return block_c, block_m, triton.cdiv(C, block_c), num_warps


def _check_input(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{name}: unsupported dtype {x.dtype}")


def _per_plane(t: torch.Tensor, B: int, C: int) -> torch.Tensor:
    """A (B, C) float32 contiguous view of a per-plane statistic (a no-op for the documented inputs)."""
    if t.shape != (B, C):
        raise ValueError(f"expected a per-plane tensor of shape {(B, C)}, got {tuple(t.shape)}")
    return t.to(torch.float32).contiguous()


def _param_tables(
    gamma: torch.Tensor | None, beta: torch.Tensor | None, B: int, C: int, style_index: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """Affine tables as float32 contiguous (rows, C) and the row stride: rows = 1 (shared, stride 0), B (one
    per sample) or S (picked by ``style_index``)."""
    tables = []
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t is not None:
            t = t.reshape(-1, C).to(torch.float32).contiguous()
            if style_index is None and t.shape[0] not in (1, B):
                raise ValueError(f"{name} needs 1 or {B} rows without style_index, got shape {tuple(t.shape)}")
        tables.append(t)
    rows = {t.shape[0] for t in tables if t is not None}
    if len(rows) > 1:
        raise ValueError(f"gamma and beta must have the same number of rows, got {sorted(rows)}")
    shared = style_index is None and rows == {1}
    return tables[0], tables[1], 0 if shared else C


def instance_norm_forward(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    style_index: torch.Tensor | None,
    eps: float,
    relu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instance norm of ``x`` (B, C, H, W) with per-sample affine and optional ReLU.

    Returns ``(y, mean, rstd)``: ``y = gamma_bc * (x - mean_bc) * rstd_bc + beta_bc`` (then ``max(y, 0)``
    with ``relu``) in x's dtype, allocated with ``torch.empty_like(x)``; ``mean`` and
    ``rstd = 1 / sqrt(var + eps)`` (biased variance over H*W) are (B, C) float32. ``gamma`` / ``beta``:
    tables of rows (1 shared row, B rows, or S rows picked per sample by ``style_index`` (B,) int64) or None
    (gamma = 1 / beta = 0); the kernel gathers the rows. Any strides of ``x`` are read in place.
    """
    _check_input("instance_norm_forward", x)
    B, C, H, W = x.shape
    gamma, beta, s_row = _param_tables(gamma, beta, B, C, style_index)
    y = torch.empty_like(x)
    mean = torch.empty((B, C), dtype=torch.float32, device=x.device)
    rstd = torch.empty((B, C), dtype=torch.float32, device=x.device)
    if B * C == 0:
        return y, mean, rstd

    block_c, block_m, n_cblocks, num_warps = _launch_config(x)
    x_W, sxh, sxw, x_split = hw_layout(x)
    y_W, syh, syw, y_split = hw_layout(y)
    _instance_norm_fwd_kernel[(B * n_cblocks,)](
        x,
        y,
        gamma if gamma is not None else mean,
        beta if beta is not None else mean,
        style_index if style_index is not None else mean,
        mean,
        rstd,
        C,
        H * W,
        n_cblocks,
        s_row,
        x.stride(0),
        x.stride(1),
        x_W,
        sxh,
        sxw,
        y.stride(0),
        y.stride(1),
        y_W,
        syh,
        syw,
        float(eps),
        HAS_GAMMA=gamma is not None,
        HAS_BETA=beta is not None,
        HAS_INDEX=style_index is not None,
        RELU=bool(relu),
        X_SPLIT_HW=x_split,
        Y_SPLIT_HW=y_split,
        BLOCK_C=block_c,
        BLOCK_M=block_m,
        num_warps=num_warps,
    )
    return y, mean, rstd


def instance_norm_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    style_index: torch.Tensor | None,
    relu: bool,
    need_affine_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`instance_norm_forward`: ``(dx, dgamma, dbeta)``.

    With ``g = grad_y * [y > 0]`` (``relu``; y recomputed from x, mean, rstd, gamma, beta) or
    ``g = grad_y``, and ``xhat = (x - mean) * rstd``::

        dbeta  = sum_hw g,   dgamma = sum_hw g * xhat                     ((B, C) float32)
        dx     = gamma * rstd * (g - mean_hw(g) - xhat * mean_hw(g * xhat))   (x's dtype, empty_like(x))

    ``dgamma`` / ``dbeta`` are per sample (B, C), empty unless ``need_affine_grad``; reducing them onto the table
    rows is the caller's job. ``gamma``, ``beta``, ``style_index`` as in the forward. ``grad_y`` may have strides
    of its own.
    """
    _check_input("instance_norm_backward", x)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y shape {tuple(grad_y.shape)} != x shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    mean, rstd = _per_plane(mean, B, C), _per_plane(rstd, B, C)
    gamma, beta, s_row = _param_tables(gamma, beta, B, C, style_index)
    dx = torch.empty_like(x)
    stats_shape = (B, C) if need_affine_grad else (0,)
    dgamma = torch.empty(stats_shape, dtype=torch.float32, device=x.device)
    dbeta = torch.empty(stats_shape, dtype=torch.float32, device=x.device)
    if B * C == 0:
        return dx, dgamma, dbeta

    block_c, block_m, n_cblocks, num_warps = _launch_config(x)
    dy_W, sdyh, sdyw, dy_split = hw_layout(grad_y)
    x_W, sxh, sxw, x_split = hw_layout(x)
    dx_W, sdxh, sdxw, dx_split = hw_layout(dx)
    _instance_norm_bwd_kernel[(B * n_cblocks,)](
        grad_y,
        x,
        dx,
        mean,
        rstd,
        gamma if gamma is not None else mean,
        beta if beta is not None else mean,
        style_index if style_index is not None else mean,
        dgamma if need_affine_grad else mean,
        dbeta if need_affine_grad else mean,
        C,
        H * W,
        n_cblocks,
        s_row,
        grad_y.stride(0),
        grad_y.stride(1),
        dy_W,
        sdyh,
        sdyw,
        x.stride(0),
        x.stride(1),
        x_W,
        sxh,
        sxw,
        dx.stride(0),
        dx.stride(1),
        dx_W,
        sdxh,
        sdxw,
        HAS_GAMMA=gamma is not None,
        HAS_BETA=beta is not None,
        HAS_INDEX=style_index is not None,
        RELU=bool(relu),
        STORE_AFFINE_GRAD=bool(need_affine_grad),
        DY_SPLIT_HW=dy_split,
        X_SPLIT_HW=x_split,
        DX_SPLIT_HW=dx_split,
        BLOCK_C=block_c,
        BLOCK_M=block_m,
        num_warps=num_warps,
    )
    return dx, dgamma, dbeta
