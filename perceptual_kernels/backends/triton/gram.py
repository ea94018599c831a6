"""Gram matrix and fused style loss: Triton forward and backward kernels.

Forward, per sample b with F_b = x[b] as a C x M matrix (M = H*W) and s the normalisation divisor:
    G_b = F_b F_b^T / s                                    (gram)
    D_b = G_b - A_b,  loss_b = sum_ij D_b[i, j]^2          (style loss, l2)
                      loss_b = sum_ij |D_b[i, j]|, and sign(D_b) (sign(NaN) = NaN) stored in place of D_b (l1)
Only tiles on and above the diagonal of G are computed; each is written twice (mirrored). The reduction over M
is split across programs when B * tiles is too small to fill the GPU (split-K, relu1_1: C = 64, M = 262144):
the partial tiles go to an fp32 workspace that a second kernel sums before the epilogue. All accumulation is
fp32 and ``1/s`` is applied before any down-cast.

Backward, one product per sample (autograd of ``bmm(F, F^T)`` would do two):
    dF_b = coef_b * (D_b + D_b^T) F_b
with ``D = dG`` and ``coef = 1/s`` for the Gram, and ``coef_b = 2 w r dL_b / s`` for the style loss (l1:
``D = sign(G - A)``, ``coef_b = w r dL_b / s``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..interface import CRITERIA
from ._common import criterion_term, dot_precision, hw_layout, interpreting, num_sms, plane_offset

_FORCE_SPLIT: int | None = None  # tests set this to exercise split-K on small shapes

_GRAM, _STYLE = 0, 1


@triton.jit
def _gram_epilogue(
    acc,
    b,
    ti,
    tj,
    C,
    rows,
    cols,
    out_ptr,
    target_ptr,
    index_ptr,
    loss_ptr,
    n_tiles,
    tile_id,
    s_tb,
    s_tr,
    s_tc,
    MODE: tl.constexpr,
    HAS_INDEX: tl.constexpr,
    L1: tl.constexpr,
):
    """Write one (rows x cols) tile of G (gram) or of D = G - A (sign(D) for L1) plus its share of the loss (style).

    ``acc`` is already scaled by 1/s. Off-diagonal tiles are also written mirrored. ``out`` is a contiguous
    (B, C, C) tensor.
    """
    mask = (rows[:, None] < C) & (cols[None, :] < C)
    out_base = out_ptr + b * C * C
    upper_ptrs = out_base + rows[:, None] * C + cols[None, :]
    mirror_ptrs = out_base + cols[None, :] * C + rows[:, None]
    if MODE == 0:
        tl.store(upper_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
        if ti != tj:
            tl.store(mirror_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        if HAS_INDEX:
            t_base = target_ptr + tl.load(index_ptr + b).to(tl.int64) * s_tb
        else:
            t_base = target_ptr + b * s_tb
        a = tl.load(t_base + rows[:, None] * s_tr + cols[None, :] * s_tc, mask=mask, other=0.0)
        d = tl.where(mask, acc - a.to(tl.float32), 0.0)
        term, stored = criterion_term(d, L1)
        tl.store(upper_ptrs, stored, mask=mask)
        partial = tl.sum(tl.sum(term, axis=1), axis=0)
        if ti != tj:
            # mirrored tile: D[j, i] = G[i, j] - A[j, i] (A need not be symmetric)
            a_t = tl.load(t_base + cols[None, :] * s_tr + rows[:, None] * s_tc, mask=mask, other=0.0)
            d_t = tl.where(mask, acc - a_t.to(tl.float32), 0.0)
            term_t, stored_t = criterion_term(d_t, L1)
            tl.store(mirror_ptrs, stored_t, mask=mask)
            partial += tl.sum(tl.sum(term_t, axis=1), axis=0)
        tl.store(loss_ptr + b * n_tiles + tile_id, partial)


@triton.jit
def _gram_fwd_kernel(
    x_ptr,
    out_ptr,
    ws_ptr,
    target_ptr,
    index_ptr,
    loss_ptr,
    C,
    M,
    W,
    s_xb,
    s_xc,
    s_xh,
    s_xw,
    s_tb,
    s_tr,
    s_tc,
    n_row_tiles,
    k_per_split,
    scale,
    MODE: tl.constexpr,
    HAS_INDEX: tl.constexpr,
    L1: tl.constexpr,
    SPLIT: tl.constexpr,
    SPLIT_HW: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Grid (tiles * tiles, splits, B). Tile (ti, tj) with ti <= tj of ``F_b F_b^T`` over one K range.

    SPLIT == 1: the tile is complete, run the epilogue here. SPLIT > 1: store the partial tile into the
    workspace ``ws`` (splits, B, C, C) for :func:`_gram_reduce_kernel`.
    """
    tile_id = tl.program_id(0)
    split = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n_tiles = n_row_tiles * n_row_tiles
    ti = tile_id // n_row_tiles
    tj = tile_id % n_row_tiles
    if ti > tj:
        if MODE == 1:
            if split == 0:
                tl.store(loss_ptr + b * n_tiles + tile_id, 0.0)
    else:
        rows = ti * BLOCK_C + tl.arange(0, BLOCK_C)
        cols = tj * BLOCK_C + tl.arange(0, BLOCK_C)
        row_ptrs = x_ptr + b * s_xb + rows.to(tl.int64)[:, None] * s_xc
        col_ptrs = x_ptr + b * s_xb + cols.to(tl.int64)[None, :] * s_xc
        k_start = split.to(tl.int64) * k_per_split
        k_end = tl.minimum(k_start + k_per_split, M)
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
            k_ok = ks < k_end
            k_off = plane_offset(ks, W, s_xh, s_xw, SPLIT_HW)
            a = tl.load(row_ptrs + k_off[None, :], mask=(rows[:, None] < C) & k_ok[None, :], other=0.0)
            bt = tl.load(col_ptrs + k_off[:, None], mask=k_ok[:, None] & (cols[None, :] < C), other=0.0)
            if DOT_FP32:
                a, bt = a.to(tl.float32), bt.to(tl.float32)
            acc = tl.dot(a, bt, acc, input_precision=PRECISION)
        if SPLIT == 1:
            _gram_epilogue(
                acc * scale,
                b,
                ti,
                tj,
                C,
                rows,
                cols,
                out_ptr,
                target_ptr,
                index_ptr,
                loss_ptr,
                n_tiles,
                tile_id,
                s_tb,
                s_tr,
                s_tc,
                MODE,
                HAS_INDEX,
                L1,
            )
        else:
            n_batch = tl.num_programs(2)
            ws = ws_ptr + (split * n_batch + b) * C * C
            mask = (rows[:, None] < C) & (cols[None, :] < C)
            tl.store(ws + rows[:, None] * C + cols[None, :], acc, mask=mask)


@triton.jit
def _gram_reduce_kernel(
    ws_ptr,
    out_ptr,
    target_ptr,
    index_ptr,
    loss_ptr,
    C,
    n_splits,
    n_row_tiles,
    scale,
    s_tb,
    s_tr,
    s_tc,
    MODE: tl.constexpr,
    HAS_INDEX: tl.constexpr,
    L1: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid (tiles * tiles, B): sum the split-K partial tiles in a fixed order, then run the epilogue."""
    tile_id = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    n_batch = tl.num_programs(1)
    n_tiles = n_row_tiles * n_row_tiles
    ti = tile_id // n_row_tiles
    tj = tile_id % n_row_tiles
    if ti > tj:
        if MODE == 1:
            tl.store(loss_ptr + b * n_tiles + tile_id, 0.0)
    else:
        rows = ti * BLOCK_C + tl.arange(0, BLOCK_C)
        cols = tj * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = (rows[:, None] < C) & (cols[None, :] < C)
        offs = rows[:, None] * C + cols[None, :]
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float32)
        for s in range(n_splits):
            acc += tl.load(ws_ptr + (s * n_batch + b) * C * C + offs, mask=mask, other=0.0)
        _gram_epilogue(
            acc * scale,
            b,
            ti,
            tj,
            C,
            rows,
            cols,
            out_ptr,
            target_ptr,
            index_ptr,
            loss_ptr,
            n_tiles,
            tile_id,
            s_tb,
            s_tr,
            s_tc,
            MODE,
            HAS_INDEX,
            L1,
        )


@triton.jit
def _sym_dot_kernel(
    d_ptr,
    x_ptr,
    out_ptr,
    coef_ptr,
    scale,
    C,
    M,
    W,
    s_db,
    s_dr,
    s_dc,
    s_xb,
    s_xc,
    s_xh,
    s_xw,
    s_ob,
    s_oc,
    s_oh,
    s_ow,
    HAS_COEF: tl.constexpr,
    X_SPLIT_HW: tl.constexpr,
    OUT_SPLIT_HW: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Grid (M tiles, C tiles, B):
    ``out_b[rows, ms] = scale * coef_b * sum_k (D_b + D_b^T)[rows, k] F_b[k, ms]`` (coef_b = 1 without it)."""
    m_tile = tl.program_id(0)
    c_tile = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rows = c_tile * BLOCK_C + tl.arange(0, BLOCK_C)
    ms = m_tile.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < C
    m_ok = ms < M
    d_base = d_ptr + b * s_db
    x_m_off = plane_offset(ms, W, s_xh, s_xw, X_SPLIT_HW)
    acc = tl.zeros((BLOCK_C, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        dmask = row_ok[:, None] & (ks[None, :] < C)
        d = tl.load(d_base + rows[:, None] * s_dr + ks[None, :] * s_dc, mask=dmask, other=0.0).to(tl.float32)
        d_t = tl.load(d_base + ks[None, :] * s_dr + rows[:, None] * s_dc, mask=dmask, other=0.0).to(tl.float32)
        f = tl.load(
            x_ptr + b * s_xb + ks.to(tl.int64)[:, None] * s_xc + x_m_off[None, :],
            mask=(ks[:, None] < C) & m_ok[None, :],
            other=0.0,
        )
        if DOT_FP32:
            f = f.to(tl.float32)
        acc = tl.dot((d + d_t).to(f.dtype), f, acc, input_precision=PRECISION)
    acc = acc * scale
    if HAS_COEF:
        acc = acc * tl.load(coef_ptr + b).to(tl.float32)
    out_m_off = plane_offset(ms, W, s_oh, s_ow, OUT_SPLIT_HW)
    out_ptrs = out_ptr + b * s_ob + rows.to(tl.int64)[:, None] * s_oc + out_m_off[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & m_ok[None, :])


def _dot_in_fp32(dtype: torch.dtype) -> bool:
    """Triton 3.9's CPU interpreter multiplies bf16 ``tl.dot`` operands wrongly; there (only) the bf16 tiles are
    widened to fp32 before the product, so the interpreter still checks the loads, masks, casts and stores."""
    return dtype == torch.bfloat16 and interpreting()


def _block_c(C: int) -> int:
    """Channel tile: C rounded up to a power of two, at least 16 (tl.dot), at most 128 (64 when interpreted)."""
    return max(16, min(64 if interpreting() else 128, triton.next_power_of_2(C)))


def _gram_blocks(C: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_K, num_warps) for the Gram kernels."""
    block_c = _block_c(C)
    block_k = 32 if (interpreting() or dtype == torch.float32) else 64
    return block_c, block_k, 8 if block_c == 128 else 4


def _num_splits(tiles: int, batch: int, M: int, block_k: int, device: torch.device) -> tuple[int, int]:
    """Split-K so that (upper-triangle tiles) * B * splits covers the GPU about twice: (splits, K per split)."""
    k_blocks = triton.cdiv(M, block_k)
    if _FORCE_SPLIT is not None:
        wanted = _FORCE_SPLIT
    else:
        wanted = max(1, (2 * num_sms(device)) // max(1, tiles * batch))
    per_split = triton.cdiv(k_blocks, max(1, min(wanted, k_blocks))) * block_k
    return triton.cdiv(M, per_split), per_split


def _gram_launch(
    x: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    mode: int,
    target: torch.Tensor | None = None,
    style_index: torch.Tensor | None = None,
    loss_parts: torch.Tensor | None = None,
    l1: bool = False,
) -> None:
    B, C, H, W = x.shape
    M = H * W
    block_c, block_k, warps = _gram_blocks(C, x.dtype)
    n_row = triton.cdiv(C, block_c)
    splits, per_split = _num_splits(n_row * (n_row + 1) // 2, B, M, block_k, x.device)
    w, s_h, s_w, split_hw = hw_layout(x)
    s_xb, s_xc = x.stride(0), x.stride(1)
    if target is None:
        target_args = (out, 0, 0, 0)  # unused pointer and strides in gram mode
    else:
        t_b = 0 if target.shape[0] == 1 and style_index is None else target.stride(0)
        target_args = (target, t_b, target.stride(1), target.stride(2))
    index = style_index if style_index is not None else out
    loss = loss_parts if loss_parts is not None else out
    ws = out if splits == 1 else torch.empty((splits, B, C, C), device=x.device, dtype=torch.float32)
    _gram_fwd_kernel[(n_row * n_row, splits, B)](
        x,
        out,
        ws,
        target_args[0],
        index,
        loss,
        C,
        M,
        w,
        s_xb,
        s_xc,
        s_h,
        s_w,
        *target_args[1:],
        n_row,
        per_split,
        scale,
        MODE=mode,
        HAS_INDEX=style_index is not None,
        L1=l1,
        SPLIT=splits,
        SPLIT_HW=split_hw,
        PRECISION=dot_precision(x.dtype),
        DOT_FP32=_dot_in_fp32(x.dtype),
        BLOCK_C=block_c,
        BLOCK_K=block_k,
        num_warps=warps,
    )
    if splits > 1:
        _gram_reduce_kernel[(n_row * n_row, B)](
            ws,
            out,
            target_args[0],
            index,
            loss,
            C,
            splits,
            n_row,
            scale,
            *target_args[1:],
            MODE=mode,
            HAS_INDEX=style_index is not None,
            L1=l1,
            BLOCK_C=block_c,
            num_warps=warps,
        )


def gram_forward(x: torch.Tensor, scale: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``G_b = F_b F_b^T * scale`` for x (B, C, H, W) of any strides -> (B, C, C) of ``out_dtype``."""
    B, C = x.shape[:2]
    out = torch.empty((B, C, C), device=x.device, dtype=out_dtype)
    _gram_launch(x, scale, out, _GRAM)
    return out


def style_loss_forward(
    x: torch.Tensor, target: torch.Tensor, style_index: torch.Tensor | None, scale: float, criterion: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``sum_ij (G_b - A_b)^2`` (B,) fp32 and ``D = G - A`` (B, C, C) fp32 in one pass over x
    (criterion 0, l2), or ``sum_ij |G_b - A_b|`` and ``sign(G - A)`` (criterion 1, l1; ``sign(NaN) = NaN``).

    ``target`` is (1, C, C) (broadcast), (B, C, C), or (S, C, C) with ``style_index`` (B,) int64.
    """
    if criterion not in range(len(CRITERIA)):
        raise ValueError(f"style_loss: criterion must be one of 0..{len(CRITERIA) - 1} ({CRITERIA}), got {criterion}")
    B, C = x.shape[:2]
    diff = torch.empty((B, C, C), device=x.device, dtype=torch.float32)
    n_row = triton.cdiv(C, _gram_blocks(C, x.dtype)[0])
    loss_parts = torch.empty((B, n_row * n_row), device=x.device, dtype=torch.float32)
    _gram_launch(x, scale, diff, _STYLE, target, style_index, loss_parts, CRITERIA[criterion] == "l1")
    return loss_parts.sum(dim=1), diff


def _sym_dot(d: torch.Tensor, x: torch.Tensor, scale: float, coef: torch.Tensor | None) -> torch.Tensor:
    """``out_b = scale * coef_b * (d_b + d_b^T) F_b`` with ``coef`` (B,) contiguous or None."""
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    block_c = _block_c(C)
    block_k = 16 if interpreting() else 32
    block_m = 32 if interpreting() else (64 if block_c == 128 else 128)
    w, xs_h, xs_w, x_split = hw_layout(x)
    _, os_h, os_w, o_split = hw_layout(out)
    grid = (triton.cdiv(H * W, block_m), triton.cdiv(C, block_c), B)
    _sym_dot_kernel[grid](
        d,
        x,
        out,
        coef if coef is not None else d,
        scale,
        C,
        H * W,
        w,
        *d.stride(),
        x.stride(0),
        x.stride(1),
        xs_h,
        xs_w,
        out.stride(0),
        out.stride(1),
        os_h,
        os_w,
        HAS_COEF=coef is not None,
        X_SPLIT_HW=x_split,
        OUT_SPLIT_HW=o_split,
        PRECISION=dot_precision(x.dtype),
        DOT_FP32=_dot_in_fp32(x.dtype),
        BLOCK_C=block_c,
        BLOCK_K=block_k,
        BLOCK_M=block_m,
        num_warps=8 if block_c == 128 else 4,
    )
    return out


def gram_backward(grad_gram: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """``dF_b = (dG_b + dG_b^T) F_b * scale``, one product per sample."""
    return _sym_dot(grad_gram, x, scale, None)


def style_loss_backward(coef: torch.Tensor, diff: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dF_b = coef_b * (D_b + D_b^T) F_b`` with ``coef_b = 2 w r dL_b / s`` (B,) fp32 (l1: ``D = sign(G - A)``,
    ``coef_b = w r dL_b / s``)."""
    return _sym_dot(diff, x, 1.0, coef)
