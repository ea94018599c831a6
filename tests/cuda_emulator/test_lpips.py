"""LPIPS layer distance (csrc/cuda/lpips.cuh: one thread per pixel, fixed-order block and row sums) on the
emulator, forward and backward, against the float64 formula."""

from __future__ import annotations

import emulator as E
import pytest
import references as R
import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIDS = ["f32", "f16", "bf16"]
# (shape, f0 layout, f1 layout): one partial block, several blocks per sample (256 pixels each), C = 1, a zero pixel
CASES = [
    ((2, 3, 5, 7), "contiguous", "contiguous"),
    ((2, 17, 17, 17), "channels_last", "sliced"),  # 289 pixels: 2 blocks per sample
    ((3, 1, 3, 1), "sliced", "contiguous"),
    ((1, 64, 3, 17), "contiguous", "channels_last"),
]
CIDS = [f"{'x'.join(map(str, s))}-{a}-{b}" for s, a, b in CASES]
EPS = 1e-10


def _reference(f0, f1, w, coef):
    """(distance (B,), df0, df1) in float64, the gradients by autograd of the lpips formula."""
    a0, a1 = (f.double().requires_grad_() for f in (f0, f1))
    n0 = a0 / (torch.linalg.vector_norm(a0, dim=1, keepdim=True) + EPS)
    n1 = a1 / (torch.linalg.vector_norm(a1, dim=1, keepdim=True) + EPS)
    per_pixel = ((n0 - n1) ** 2 * w.double()[:, None, None]).sum(1)
    dist = per_pixel.mean((1, 2))
    # coef_b is the upstream gradient over H*W: the gradient of sum_b coef_b * sum_hw per_pixel
    g0, g1 = torch.autograd.grad((per_pixel.sum((1, 2)) * coef.double()).sum(), [a0, a1])
    return dist.detach(), g0, g1


@pytest.mark.parametrize("dtype", DTYPES, ids=DIDS)
@pytest.mark.parametrize("shape,l0,l1", CASES, ids=CIDS)
def test_lpips_forward_backward(harness, shape, l0, l1, dtype):
    f0, f1 = R.make(shape, dtype, l0), R.make(shape, dtype, l1)
    if shape == (2, 3, 5, 7) and dtype != torch.float16:
        # a zero feature vector: the derivative is I / eps there (~1e10 g: past fp16's range, so not in fp16)
        f0[1, :, 2, 3] = 0
    B, C = shape[:2]
    w = torch.rand(C) + 0.05
    coef = torch.randn(B)
    exe = harness("lpips")
    common = dict(sizes=f0.shape, strides0=f0.stride(), strides1=f1.stride(), dtype=E.DTYPE_CODES[dtype], eps=EPS)
    dist, g0_ref, g1_ref = _reference(f0, f1, w, coef)
    fwd = E.run_orders(
        exe, "lpips_forward", {"f0": f0, "f1": f1, "weight": w}, {"dist": E.Out.contiguous((B,))}, **common
    )
    R.check(fwd["dist"], dist, "fp32")
    if C == 1:
        return  # n = sign(f): the gradient is eps-small, all rounding (the op tests cover its size)
    g0, g1 = E.Out.like(f0), E.Out.like(f1)
    bwd = E.run_orders(
        exe,
        "lpips_backward",
        {"f0": f0, "f1": f1, "weight": w, "coef": coef},
        {"grad0": g0, "grad1": g1},
        g_strides0=g0.stride,
        g_strides1=g1.stride,
        need_grad0=1,
        need_grad1=1,
        **common,
    )
    R.check(bwd["grad0"], g0_ref, R.PRECISION[dtype], "grad0")
    R.check(bwd["grad1"], g1_ref, R.PRECISION[dtype], "grad1")


def test_lpips_backward_one_side_and_nan(harness):
    f0, f1 = R.make((2, 5, 4, 6), torch.float32, "contiguous"), R.make((2, 5, 4, 6), torch.float32, "sliced")
    f0[1, 3, 2, 2] = float("nan")
    w, coef = torch.rand(5) + 0.05, torch.ones(2)
    exe = harness("lpips")
    common = dict(sizes=f0.shape, strides0=f0.stride(), strides1=f1.stride(), dtype=0, eps=EPS)
    fwd = E.run_orders(
        exe, "lpips_forward", {"f0": f0, "f1": f1, "weight": w}, {"dist": E.Out.contiguous((2,))}, **common
    )
    assert fwd["dist"][1].isnan() and not fwd["dist"][0].isnan()
    g1 = E.Out.like(f1)
    bwd = E.run_orders(
        exe,
        "lpips_backward",
        {"f0": f0, "f1": f1, "weight": w, "coef": coef},
        {"grad1": g1},
        g_strides1=g1.stride,
        need_grad0=0,
        need_grad1=1,
        **common,
    )
    _, _, g1_ref = _reference(f0, f1, w, coef)
    R.check(bwd["grad1"], g1_ref, "fp32", "grad1")
    assert bwd["grad1"][1, :, 2, 2].isnan().all() and not bwd["grad1"][0].isnan().any()
