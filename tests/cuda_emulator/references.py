"""Float64 references (torch on the CPU) of the CUDA kernels, inputs in every layout, and the comparison rules."""

from __future__ import annotations

import torch

# tolerance by the precision the kernel computes in, relative to the reference's largest magnitude: about 8 units
# in the last place of the operands' precision (fp32 24 bits, tf32 11, fp16 11, bf16 8)
TOL = {"fp32": 1e-5, "tf32": 4e-3, "fp16": 4e-3, "bf16": 3e-2}
PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def make(shape: tuple[int, ...], dtype: torch.dtype, layout: str, scale: float = 1.0) -> torch.Tensor:
    """Random (B, C, H, W) input, ``contiguous``, ``channels_last`` or ``sliced`` (a strided view at an offset)."""
    B, C, H, W = shape
    if layout == "contiguous":
        return (scale * torch.randn(shape)).to(dtype)
    if layout == "channels_last":
        return (scale * torch.randn(shape)).to(dtype).to(memory_format=torch.channels_last)
    assert layout == "sliced"
    return (scale * torch.randn(B, C + 1, H + 2, W + 3)).to(dtype)[:, 1:, 1 : H + 1, 2 : W + 2]


def non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """c10's is_non_overlapping_and_dense: the dims of size >= 2 sorted by stride tile memory without gaps."""
    dims = sorted((d for d in range(t.dim()) if t.shape[d] >= 2), key=lambda d: t.stride(d))
    required = 1
    for d in dims:
        if t.stride(d) != required:
            return False
        required *= t.shape[d]
    return True


def check(out: torch.Tensor, ref: torch.Tensor, precision: str, what: str = "") -> None:
    """|out - ref| <= tol * (|ref| + max |ref|) elementwise (NaN where the reference has NaN)."""
    tol = TOL[precision]
    ref = ref.double()
    scale = ref[ref.isfinite()].abs().max().item() if ref.isfinite().any() else 1.0
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * max(scale, 1e-30), equal_nan=True, msg=what)


def gram(x: torch.Tensor, scale: float) -> torch.Tensor:
    """G_b = scale * F_b F_b^T, F_b = x[b] as (C, H * W)."""
    f = x.double().flatten(2)
    return scale * f @ f.transpose(1, 2)


def style(x: torch.Tensor, target: torch.Tensor, index: torch.Tensor | None, scale: float):
    """(loss_b = sum (G_b - A_b)^2, D_b = G_b - A_b), A_b = target[index[b]] (row b, or row 0 when R == 1)."""
    g = gram(x, scale)
    t = target.double()
    a = t[index] if index is not None else (t.expand_as(g) if t.shape[0] == 1 else t)
    d = g - a
    return d.pow(2).sum((1, 2)), d


def sym_dot(d: torch.Tensor, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """dF_b = coef_b (D_b + D_b^T) F_b, shaped as x."""
    f = x.double().flatten(2)
    dd = d.double()
    return (coef.double().view(-1, 1, 1) * ((dd + dd.transpose(1, 2)) @ f)).view(x.shape)


def affine_rows(table: torch.Tensor | None, index: torch.Tensor | None, B: int, absent: float) -> torch.Tensor:
    if table is None:
        return torch.tensor(absent, dtype=torch.float64)
    t = table.double()
    rows = t[index] if index is not None else (t.expand(B, -1) if t.shape[0] == 1 else t)
    return rows[:, :, None, None]


def inorm(x, gamma, beta, index, eps: float, relu: bool):
    """(y, mean, rstd): y = (x - mean) rstd gamma + beta per (b, c) plane, then ReLU."""
    xd = x.double()
    mean = xd.mean((2, 3), keepdim=True)
    var = (xd - mean).pow(2).mean((2, 3), keepdim=True)
    rstd = 1 / torch.sqrt(var + eps)
    y = (xd - mean) * rstd * affine_rows(gamma, index, x.shape[0], 1.0) + affine_rows(beta, index, x.shape[0], 0.0)
    return (y.clamp_min(0) if relu else y), mean[:, :, 0, 0], rstd[:, :, 0, 0]


def inorm_backward(dy, x, mean, rstd, gamma, beta, index, relu: bool):
    """(dx, dgamma, dbeta) of inorm given the forward's statistics (g = dy masked where y <= 0 with relu)."""
    xd, B = x.double(), x.shape[0]
    m, r = mean.double()[:, :, None, None], rstd.double()[:, :, None, None]
    scale = affine_rows(gamma, index, B, 1.0) * r
    xc = xd - m
    g = dy.double()
    if relu:
        g = torch.where(xc * scale + affine_rows(beta, index, B, 0.0) <= 0, 0.0, g)
    xhat = xc * r
    n = x.shape[2] * x.shape[3]
    dbeta, dgamma = g.sum((2, 3)), (g * xhat).sum((2, 3))
    dx = scale * (g - dbeta[:, :, None, None] / n - xhat * dgamma[:, :, None, None] / n)
    return dx, dgamma, dbeta


def tv(x: torch.Tensor, kind: int, eps: float) -> torch.Tensor:
    """Per-sample total variation: 0 squared, 1 l1, 2 isotropic (sqrt(dh^2 + dw^2 + eps) over i < H-1, j < W-1)."""
    xd = x.double()
    dh = xd[:, :, 1:, :] - xd[:, :, :-1, :]
    dw = xd[:, :, :, 1:] - xd[:, :, :, :-1]
    if kind == 0:
        return dh.pow(2).sum((1, 2, 3)) + dw.pow(2).sum((1, 2, 3))
    if kind == 1:
        return dh.abs().sum((1, 2, 3)) + dw.abs().sum((1, 2, 3))
    t = torch.sqrt(dh[:, :, :, :-1].pow(2) + dw[:, :, :-1, :].pow(2) + eps)
    return t.sum((1, 2, 3))


def tv_grad(x: torch.Tensor, kind: int, eps: float, coef: torch.Tensor) -> torch.Tensor:
    """coef_b * d tv_b / dx by autograd in float64."""
    xd = x.detach().double().requires_grad_(True)
    (tv(xd, kind, eps) * coef.double()).sum().backward()
    return xd.grad


def sign(d: torch.Tensor) -> torch.Tensor:
    """sign(d) with sign(0) = 0 and sign(NaN) = NaN (the kernels' l1 gradient)."""
    return torch.where(d > 0, 1.0, torch.where(d < 0, -1.0, d)).to(d.dtype)


def style_target_off_zero(g: torch.Tensor, rows: int, index: torch.Tensor | None) -> torch.Tensor:
    """(rows, C, C) float64 targets at least 0.1 max|G| away from the Grams g (B, C, C) of every sample that reads
    them (row index[b], or row b, or row 0 when rows == 1), on a random side: sign(G - A) is then exact in every
    precision."""
    B = g.shape[0]
    margin = 0.1 * g.abs().max().clamp_min(1e-3)
    out = []
    for r in range(rows):
        if index is not None:
            readers = [b for b in range(B) if index[b] == r] or list(range(B))
        else:
            readers = list(range(B)) if rows == 1 else [r]
        lo, hi = g[readers].amin(0), g[readers].amax(0)
        above = torch.randint(0, 2, lo.shape).bool()
        gap = margin * (1 + torch.rand(lo.shape, dtype=torch.float64))
        out.append(torch.where(above, hi + gap, lo - gap))
    return torch.stack(out)
