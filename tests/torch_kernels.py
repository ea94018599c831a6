"""The kernel interface of a backend (what ``perceptual_kernels.backends.kernels(name)`` returns), written in plain
torch and float64-capable. Registered under the name "torch-test", it lets the custom ops' hand-written backward
(``perceptual_kernels._ops``) be gradchecked in float64 and their dispatch overhead be measured without a GPU."""

from __future__ import annotations

import torch

from perceptual_kernels.backends.interface import TV_KINDS


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.double() if x.dtype == torch.float64 else x.float()


def gram_forward(x, scale, out_dtype):
    f = _acc(x).flatten(2)
    return (f @ f.transpose(1, 2) * scale).to(out_dtype)


def gram_backward(grad, x, scale):
    f = _acc(x).flatten(2)
    g = _acc(grad)
    return ((g + g.transpose(1, 2)) @ f * scale).view_as(x).to(x.dtype)


def style_loss_forward(x, target, style_index, scale):
    gram = gram_forward(x, scale, torch.float64 if x.dtype == torch.float64 else torch.float32)
    tgt = target.to(gram.dtype)
    tgt = tgt.index_select(0, style_index) if style_index is not None else tgt.expand_as(gram)
    diff = gram - tgt
    return (diff * diff).sum((1, 2)), diff


def style_loss_backward(coef, diff, x):
    f = _acc(x).flatten(2)
    return (coef.to(f.dtype)[:, None, None] * ((diff + diff.transpose(1, 2)).to(f.dtype) @ f)).view_as(x).to(x.dtype)


def content_loss_forward(x, target):
    d = _acc(x) - target.to(_acc(x).dtype)
    return (d * d).sum()


def content_loss_backward(x, target, coef):
    d = _acc(x) - target.to(_acc(x).dtype)
    return (coef.to(d.dtype) * d).to(x.dtype)


def _tv(x, kind, eps):
    """Per-sample TV (B,) and its gradient, in the accumulation dtype; ``kind`` the interface's integer code."""
    kind = TV_KINDS[kind]
    xf = _acc(x)
    dh = xf[:, :, 1:, :] - xf[:, :, :-1, :]
    dw = xf[:, :, :, 1:] - xf[:, :, :, :-1]
    grad = torch.zeros_like(xf)
    if kind == "isotropic":
        dh, dw = dh[:, :, :, :-1], dw[:, :, :-1, :]
        norm = (dh * dh + dw * dw + eps).sqrt()
        per_sample = norm.sum((1, 2, 3))
        grad[:, :, 1:, :-1] += dh / norm
        grad[:, :, :-1, 1:] += dw / norm
        grad[:, :, :-1, :-1] -= (dh + dw) / norm
    else:
        fh, fw = (dh * dh, dw * dw) if kind == "squared" else (dh.abs(), dw.abs())
        per_sample = fh.sum((1, 2, 3)) + fw.sum((1, 2, 3))
        gh, gw = (2 * dh, 2 * dw) if kind == "squared" else (dh.sign(), dw.sign())
        grad[:, :, 1:, :] += gh
        grad[:, :, :-1, :] -= gh
        grad[:, :, :, 1:] += gw
        grad[:, :, :, :-1] -= gw
    return per_sample, grad


def tv_forward(x, kind, eps):
    return _tv(x, kind, eps)[0]


def tv_backward(x, kind, eps, coef):
    grad = _tv(x, kind, eps)[1]
    return (coef.to(grad.dtype)[:, None, None, None] * grad).to(x.dtype)


def _rows(table, x, style_index):
    """Per-sample (B, C, 1, 1) parameters from a table of 1, B or S rows."""
    if table is None:
        return None
    table = table.reshape(-1, x.shape[1]).to(_acc(x).dtype)
    if style_index is not None:
        table = table[style_index]
    return table.expand(x.shape[0], -1)[:, :, None, None]


def instance_norm_forward(x, gamma, beta, style_index, eps, relu):
    gamma, beta = _rows(gamma, x, style_index), _rows(beta, x, style_index)
    xf = _acc(x)
    mean = xf.mean((2, 3))
    rstd = torch.rsqrt(((xf - mean[:, :, None, None]) ** 2).mean((2, 3)) + eps)
    y = (xf - mean[:, :, None, None]) * rstd[:, :, None, None]
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return (y.clamp_min(0) if relu else y).to(x.dtype), mean, rstd


def instance_norm_backward(grad_y, x, mean, rstd, gamma, beta, style_index, relu, need_affine_grad):
    gamma, beta = _rows(gamma, x, style_index), _rows(beta, x, style_index)
    xhat = (_acc(x) - mean[:, :, None, None]) * rstd[:, :, None, None]
    g = _acc(grad_y)
    if relu:
        y = xhat * (gamma if gamma is not None else 1) + (beta if beta is not None else 0)
        g = g * (y > 0)
    scale = rstd[:, :, None, None] * (gamma if gamma is not None else 1)
    dx = scale * (g - g.mean((2, 3), keepdim=True) - xhat * (g * xhat).mean((2, 3), keepdim=True))
    if not need_affine_grad:
        return dx.to(x.dtype), mean.new_empty(0), mean.new_empty(0)
    return dx.to(x.dtype), (g * xhat).sum((2, 3)), g.sum((2, 3))


def _lpips_parts(f0, f1, eps):
    a0, a1 = _acc(f0), _acc(f1)
    r0 = (a0 * a0).sum(1, keepdim=True).sqrt()
    r1 = (a1 * a1).sum(1, keepdim=True).sqrt()
    return a0, a1, r0, r1, a0 / (r0 + eps), a1 / (r1 + eps)


def lpips_forward(f0, f1, weight, eps):
    _, _, _, _, n0, n1 = _lpips_parts(f0, f1, eps)
    return ((n0 - n1) ** 2 * weight.to(n0.dtype)[:, None, None]).sum(1).mean((1, 2))


def lpips_backward(f0, f1, weight, eps, coef, need_grad0, need_grad1):
    a0, a1, r0, r1, n0, n1 = _lpips_parts(f0, f1, eps)
    g = 2 * weight.to(n0.dtype)[:, None, None] * (n0 - n1)
    c = coef.to(n0.dtype)[:, None, None, None]

    def grad(a, r, gs):
        dot = (gs * a).sum(1, keepdim=True)
        second = torch.where(r > 0, dot / (r * (r + eps)), 0.0)
        return (c * (gs - a * second) / (r + eps)).to(f0.dtype)

    empty = f0.new_empty(0)
    return (grad(a0, r0, g) if need_grad0 else empty, grad(a1, r1, -g) if need_grad1 else empty)
