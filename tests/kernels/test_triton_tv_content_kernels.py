"""Triton TV and content kernels against float64 torch references (run with TRITON_INTERPRET=1 on CPU)."""

from __future__ import annotations

import os

import pytest
import torch
from _helpers import dtype_id, shape_id

pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

from perceptual_kernels.backends.interface import tv_kind_code
from perceptual_kernels.backends.triton import content, tv

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {  # (rtol, atol relative to the scale of the values)
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}
KINDS = ("squared", "l1", "isotropic")
SHAPES = [
    (1, 1, 1, 1),
    (3, 17, 7, 31),
    (2, 3, 31, 2),
    (1, 64, 2, 7),
    (3, 1, 1, 31),
    (2, 3, 31, 1),
    (1, 2, 37, 70),
]  # the last one spans several tiles in both directions


def tv_forward(x, kind, eps, grad_scale, need_grad):
    """The forward kernel's per-sample loss and, with need_grad, the backward kernel's gradient for a uniform
    coefficient ``grad_scale`` (both kernels of the pair)."""
    kind = tv_kind_code(kind)
    per_sample = tv.tv_forward(x, kind, eps)
    if not need_grad:
        return per_sample, None
    coef = torch.full((x.shape[0],), grad_scale, dtype=torch.float32, device=x.device)
    return per_sample, tv.tv_backward(x, kind, eps, coef)


def content_loss_forward(x, target, grad_scale, need_grad, criterion=0):
    """The forward kernel's loss and, with need_grad, the backward kernel's ``grad_scale * (x - target)`` (l1,
    criterion 1: ``grad_scale * sign(x - target)``)."""
    total = content.content_loss_forward(x, target, criterion)
    if not need_grad:
        return total, None
    return total, content.content_loss_backward(x, target, torch.tensor(grad_scale, device=x.device), criterion)


# ----------------------------------------------------------------------------------------------
# references (float64)
# ----------------------------------------------------------------------------------------------
def nan_abs(d: torch.Tensor) -> torch.Tensor:
    """|d| whose autograd gradient is sign(d) with sign(0) = 0 and sign(NaN) = NaN (torch.abs gives 0)."""
    sign = torch.where(d > 0, 1.0, torch.where(d < 0, -1.0, d * 0.0)).detach()
    return d * sign


def ref_tv_terms(x: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """Per-sample TV of x (float64), following the formulas of tv_forward."""
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    if kind == "squared":
        return dh.pow(2).sum((1, 2, 3)) + dw.pow(2).sum((1, 2, 3))
    if kind == "l1":
        return nan_abs(dh).sum((1, 2, 3)) + nan_abs(dw).sum((1, 2, 3))
    dh, dw = dh[..., :, :-1], dw[..., :-1, :]
    return torch.sqrt(dh * dh + dw * dw + eps).sum((1, 2, 3))


def ref_tv(x: torch.Tensor, kind: str, eps: float, grad_scale: float):
    x64 = x.detach().to(torch.float64).requires_grad_(True)
    per_sample = ref_tv_terms(x64, kind, eps)
    (grad,) = torch.autograd.grad(per_sample.sum(), x64)
    return per_sample.detach(), grad * grad_scale


def ref_content(x: torch.Tensor, target: torch.Tensor, grad_scale: float):
    d = x.to(torch.float64) - target.to(torch.float64)
    return (d * d).sum(), grad_scale * d


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    rtol, atol = TOL[dtype]
    expected = expected.to(torch.float64)
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.cpu().to(torch.float64), expected.cpu(), rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}"
    )


def make(shape, layout: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A (B, C, H, W) tensor of ``shape`` in the given memory layout."""
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    if layout == "contiguous":
        return torch.randn(shape, generator=g).to(DEVICE, dtype)
    if layout == "channels_last":
        return torch.randn(shape, generator=g).to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    if layout == "sliced_hw":
        big = torch.randn(B, C, H + 2, W + 2, generator=g).to(DEVICE, dtype)
        return big[:, :, 1:-1, 2:]
    if layout == "sliced_c":
        big = torch.randn(B, 2 * C, H, W, generator=g).to(DEVICE, dtype)
        return big[:, ::2]
    raise ValueError(layout)


# ----------------------------------------------------------------------------------------------
# total variation
# ----------------------------------------------------------------------------------------------
@pytest.mark.triton
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_tv_fp32_contiguous(shape, kind):
    x = make(shape, "contiguous", torch.float32, seed=1)
    per_sample, grad = tv_forward(x, kind, 1e-3, 0.7, True)
    ref_loss, ref_grad = ref_tv(x, kind, 1e-3, 0.7)
    assert per_sample.shape == (shape[0],) and per_sample.dtype == torch.float32
    assert grad.shape == x.shape and grad.dtype == x.dtype
    close(per_sample, ref_loss, torch.float32, "loss")
    close(grad, ref_grad, torch.float32, "grad")


@pytest.mark.triton
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["channels_last", "sliced_hw", "sliced_c"])
@pytest.mark.parametrize("shape", [(3, 17, 7, 31), (2, 3, 31, 2), (2, 3, 31, 1), (1, 2, 37, 70)], ids=shape_id)
def test_tv_fp32_layouts(shape, layout, kind):
    x = make(shape, layout, torch.float32, seed=2)
    per_sample, grad = tv_forward(x, kind, 1e-2, -1.5, True)
    ref_loss, ref_grad = ref_tv(x, kind, 1e-2, -1.5)
    assert grad.stride() == torch.empty_like(x).stride()
    close(per_sample, ref_loss, torch.float32, "loss")
    close(grad, ref_grad, torch.float32, "grad")


@pytest.mark.triton
@pytest.mark.parametrize("kind", KINDS)
def test_tv_no_grad(kind):
    x = make((3, 17, 7, 31), "sliced_hw", torch.float32, seed=3)
    per_sample, grad = tv_forward(x, kind, 1e-3, 1.0, False)
    assert grad is None
    close(per_sample, ref_tv(x, kind, 1e-3, 1.0)[0], torch.float32, "loss")


@pytest.mark.triton
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_hw"])
def test_tv_half(layout, dtype, kind):
    x = make((2, 5, 19, 37), layout, dtype, seed=4)
    per_sample, grad = tv_forward(x, kind, 1e-3, 0.25, True)
    ref_loss, ref_grad = ref_tv(x, kind, 1e-3, 0.25)  # reference on the same (rounded) input values
    assert per_sample.dtype == torch.float32 and grad.dtype == dtype
    close(per_sample, ref_loss, dtype, "loss")
    close(grad, ref_grad, dtype, "grad")


@pytest.mark.triton
def test_tv_l1_sign_of_zero():
    x = torch.zeros(1, 1, 4, 5, device=DEVICE)
    x[0, 0, 2, 2] = 1.0
    per_sample, grad = tv_forward(x, "l1", 0.0, 1.0, True)
    ref_loss, ref_grad = ref_tv(x, "l1", 0.0, 1.0)
    close(per_sample, ref_loss, torch.float32, "loss")
    close(grad, ref_grad, torch.float32, "grad")


@pytest.mark.triton
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced_hw"])
def test_tv_nan_propagation(layout, kind):
    B, C, H, W = 2, 3, 20, 40  # several tiles in the interpreter; NaN placed on a tile border
    x = make((B, C, H, W), layout, torch.float32, seed=5)
    x[1, 2, 16, 31] = float("nan")
    per_sample, grad = tv_forward(x, kind, 1e-3, 1.0, True)
    assert torch.isfinite(per_sample[0]) and torch.isnan(per_sample[1])

    near = torch.zeros(B, C, H, W, dtype=torch.bool)
    near[1, 2, 15:18, 30:33] = True  # the 3x3 box around the NaN holds every pixel whose gradient sees it
    grad = grad.cpu()
    assert torch.isnan(grad[1, 2, 16, 31])
    assert torch.isnan(grad[1, 2, 17, 31])  # below: its up-difference is NaN for every kind
    assert torch.isnan(grad[1, 2, 16, 32])  # right: its left-difference is NaN for every kind
    assert torch.isfinite(grad[~near]).all()

    ref_loss, ref_grad = ref_tv(x, kind, 1e-3, 1.0)
    close(per_sample[0], ref_loss[0], torch.float32, "loss")
    torch.testing.assert_close(grad.to(torch.float64), ref_grad, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.triton
def test_tv_bad_args():
    with pytest.raises(ValueError, match="kind"):
        tv.tv_forward(torch.zeros(1, 1, 2, 2, device=DEVICE), 3, 0.0)
    with pytest.raises(ValueError, match="coef"):
        tv.tv_backward(torch.zeros(2, 1, 2, 2, device=DEVICE), 1, 0.0, torch.ones(3, device=DEVICE))


@pytest.mark.triton
def test_tv_per_sample_coefficients_and_fp16_range():
    """coef_b scales sample b only, applied in fp32 before the one cast: a gradient that fits fp16 never
    overflows even where the unscaled dTV/dx (here 1.2e5) would not fit."""
    x = make((3, 2, 5, 6), "contiguous", torch.float32, seed=13)
    coef = torch.tensor([0.5, -2.0, 0.0], device=DEVICE)
    grad = tv.tv_backward(x, tv_kind_code("squared"), 0.0, coef)
    ref = ref_tv(x, "squared", 0.0, 1.0)[1]
    close(grad, ref * coef.double()[:, None, None, None].cpu(), torch.float32, "grad")
    big = torch.zeros(1, 1, 4, 4, dtype=torch.float16, device=DEVICE)
    big[..., ::2] = 30000
    big[..., 1::2] = -30000
    grad = tv.tv_backward(big, tv_kind_code("squared"), 0.0, torch.tensor([1 / 16], device=DEVICE))
    assert torch.isfinite(grad).all()
    close(grad, ref_tv(big, "squared", 0.0, 1 / 16)[1], torch.float16, "grad")


# ----------------------------------------------------------------------------------------------
# content (feature MSE)
# ----------------------------------------------------------------------------------------------
CONTENT_CASES = [
    # (x layout, target layout): equal dense layouts take the flat path, the rest the strided one
    ("contiguous", "contiguous"),
    ("channels_last", "channels_last"),
    ("contiguous", "channels_last"),
    ("channels_last", "contiguous"),
    ("sliced_hw", "contiguous"),
    ("contiguous", "sliced_c"),
    ("sliced_c", "sliced_hw"),
]


@pytest.mark.triton
@pytest.mark.parametrize("need_grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("layouts", CONTENT_CASES, ids="-".join)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 17, 7, 31), (2, 3, 31, 1), (1, 64, 2, 7)], ids=shape_id)
def test_content_fp32(shape, layouts, need_grad):
    x = make(shape, layouts[0], torch.float32, seed=6)
    target = make(shape, layouts[1], torch.float32, seed=7)
    sum_sq, grad = content_loss_forward(x, target, 0.3, need_grad)
    ref_sum, ref_grad = ref_content(x, target, 0.3)
    assert sum_sq.shape == () and sum_sq.dtype == torch.float32
    close(sum_sq, ref_sum, torch.float32, "sum_sq")
    if need_grad:
        assert grad.dtype == x.dtype and grad.stride() == torch.empty_like(x).stride()
        close(grad, ref_grad, torch.float32, "grad")
    else:
        assert grad is None


@pytest.mark.triton
@pytest.mark.parametrize(
    "x_dtype,t_dtype",
    [
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float32, torch.bfloat16),
    ],
    ids=dtype_id,
)
@pytest.mark.parametrize("layouts", [("contiguous", "contiguous"), ("channels_last", "sliced_hw")], ids="-".join)
def test_content_mixed_dtypes(layouts, x_dtype, t_dtype):
    shape = (2, 9, 13, 21)
    x = make(shape, layouts[0], x_dtype, seed=8)
    target = make(shape, layouts[1], t_dtype, seed=9)
    sum_sq, grad = content_loss_forward(x, target, 2.0, True)
    ref_sum, ref_grad = ref_content(x, target, 2.0)  # on the same (rounded) input values
    assert sum_sq.dtype == torch.float32 and grad.dtype == x_dtype
    close(sum_sq, ref_sum, torch.float32, "sum_sq")  # fp32 math on exact inputs: fp32 accuracy
    close(grad, ref_grad, x_dtype, "grad")  # rounded once to x's dtype


@pytest.mark.triton
@pytest.mark.parametrize("layouts", [("contiguous", "contiguous"), ("sliced_hw", "channels_last")], ids="-".join)
def test_content_nan_propagation(layouts):
    shape = (2, 3, 17, 23)
    x = make(shape, layouts[0], torch.float32, seed=10)
    target = make(shape, layouts[1], torch.float32, seed=11)
    x[1, 2, 5, 7] = float("nan")
    target[0, 1, 3, 4] = float("nan")
    sum_sq, grad = content_loss_forward(x, target, 1.0, True)
    assert torch.isnan(sum_sq)
    nan = torch.zeros(shape, dtype=torch.bool)
    nan[1, 2, 5, 7] = nan[0, 1, 3, 4] = True
    grad = grad.cpu()
    assert torch.isnan(grad[nan]).all() and torch.isfinite(grad[~nan]).all()


@pytest.mark.triton
@pytest.mark.parametrize("target_layout", ["expanded", "contiguous"])
def test_content_many_blocks_and_broadcast_target(target_layout):
    x = make((2, 8, 40, 50), "contiguous", torch.float32, seed=12)  # 32000 elements: many programs
    target = torch.randn(1, 8, 40, 1, device=DEVICE).expand(2, 8, 40, 50)  # zero strides: strided path
    if target_layout == "contiguous":
        target = target.contiguous()
    sum_sq, grad = content_loss_forward(x, target, 0.5, True)
    ref_sum, ref_grad = ref_content(x, target, 0.5)
    close(sum_sq, ref_sum, torch.float32, "sum_sq")
    close(grad, ref_grad, torch.float32, "grad")


@pytest.mark.triton
def test_content_fp16_gradient_is_scaled_before_the_cast():
    """x = +40000, t = -40000: 2 (x - t) = 1.6e5 overflows fp16, the mean-reduced gradient 1e4 does not."""
    x = torch.full((1, 1, 4, 4), 40000.0, dtype=torch.float16, device=DEVICE)
    grad = content.content_loss_backward(x, -x, torch.tensor(2.0 / 16, device=DEVICE), 0)
    assert torch.equal(grad.float().cpu(), torch.full((1, 1, 4, 4), 1e4))


def ref_content_l1(x: torch.Tensor, target: torch.Tensor, grad_scale: float):
    d = x.to(torch.float64) - target.to(torch.float64)
    return d.abs().sum(), grad_scale * torch.where(d > 0, 1.0, torch.where(d < 0, -1.0, d))


@pytest.mark.triton
@pytest.mark.parametrize(
    "case", ["flat", "expanded_target", "expanded_x_channels_last"], ids=["flat", "stride0_target", "stride0_x"]
)
def test_content_l1_flat_and_stride_0(case):
    """l1 through the flat and strided kernels, with exact ties (sign 0), a NaN (sign NaN) and stride-0 operands;
    the gradient of a stride-0 x is dense (torch.empty_like)."""
    shape = (3, 5, 9, 13)
    x = make(shape, "contiguous", torch.float32, seed=13)
    target = make(shape, "contiguous", torch.float32, seed=14)
    if case == "expanded_target":
        target = target[:1].expand(shape)
    elif case == "expanded_x_channels_last":
        x = make((1, *shape[1:]), "channels_last", torch.float32, seed=15).expand(shape)
    ties = torch.rand(shape, device=DEVICE) < 0.3
    if case == "flat":
        target = torch.where(ties, x, target)
        x[1, 2, 3, 4] = float("nan")
    total, grad = content_loss_forward(x, target, 0.5, True, criterion=1)
    ref_total, ref_grad = ref_content_l1(x, target, 0.5)
    assert grad.stride() == torch.empty_like(x).stride() and 0 not in grad.stride()
    if case == "flat":
        assert total.isnan() and grad[1, 2, 3, 4].isnan() and ((grad == 0) == (ref_grad == 0)).all()
        return
    close(total, ref_total, torch.float32, "sum_abs")
    close(grad, ref_grad, torch.float32, "grad")
