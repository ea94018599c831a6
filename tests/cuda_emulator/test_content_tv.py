"""Content loss (csrc/cuda/content.cuh: flat vector and strided kernels, mixed dtypes) and total variation
(csrc/cuda/tv.cuh: squared, l1, isotropic; tiles with halos) on the emulator, forward and backward."""

from __future__ import annotations

import emulator as E
import pytest
import references as R
import torch

# (x dtype, target dtype)
PAIRS = [(torch.float32, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.float16)]
PIDS = ["f32-f32", "f16-f32", "bf16-f16"]
# (shape, x layout, target layout): flat kernel (n % vector tail, several blocks), strided kernel
CONTENT = [
    ((2, 3, 5, 7), "contiguous", "contiguous"),
    ((2, 4, 33, 40), "channels_last", "channels_last"),  # 10560 elements: 3 to 6 blocks of the flat kernel
    ((1, 3, 17, 31), "sliced", "contiguous"),
    ((2, 5, 9, 19), "contiguous", "channels_last"),
]
CIDS = [f"{'x'.join(map(str, s))}-{a}-{b}" for s, a, b in CONTENT]


@pytest.mark.parametrize("pair", PAIRS, ids=PIDS)
@pytest.mark.parametrize("shape,x_layout,t_layout", CONTENT, ids=CIDS)
def test_content_forward_backward(harness, pair, shape, x_layout, t_layout):
    x, t = R.make(shape, pair[0], x_layout), R.make(shape, pair[1], t_layout)
    common = dict(
        sizes=x.shape,
        strides=x.stride(),
        t_strides=t.stride(),
        dtype=E.DTYPE_CODES[pair[0]],
        t_dtype=E.DTYPE_CODES[pair[1]],
        dense=R.non_overlapping_and_dense(x),
    )
    exe = harness("content")
    fwd = E.run_orders(exe, "content_forward", {"x": x, "t": t}, {"loss": E.Out.contiguous(())}, **common)
    d = x.double() - t.double()
    R.check(fwd["loss"], d.pow(2).sum(), "fp32")
    g = E.Out.like(x)
    coef = torch.tensor([0.75])
    bwd = E.run_orders(
        exe, "content_backward", {"x": x, "t": t, "coef": coef}, {"grad": g}, g_strides=g.stride, **common
    )
    R.check(bwd["grad"], 0.75 * d, R.PRECISION[pair[0]])


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIDS = ["f32", "f16", "bf16"]
KINDS = [0, 1, 2]
KIDS = ["squared", "l1", "isotropic"]
# one partial tile, several tiles in both directions (tile 32 x 64), a single row
TV = [
    ((2, 3, 5, 7), "contiguous"),
    ((1, 2, 40, 70), "channels_last"),
    ((1, 2, 1, 9), "sliced"),
    ((2, 1, 33, 65), "sliced"),
]
TIDS = [f"{'x'.join(map(str, s))}-{lay}" for s, lay in TV]


# large planes in fp16 / bf16 run with the isotropic kind only (it reads the most neighbours)
TV_CASES = [
    pytest.param(shape, layout, dtype, kind, id=f"{tid}-{did}-{kid}")
    for (shape, layout), tid in zip(TV, TIDS)
    for dtype, did in zip(DTYPES, DIDS)
    for kind, kid in zip(KINDS, KIDS)
    if dtype == torch.float32 or shape[2] * shape[3] <= 1000 or kind == 2
]


@pytest.mark.parametrize("shape,layout,dtype,kind", TV_CASES)
def test_tv_forward_backward(harness, shape, layout, dtype, kind):
    x = R.make(shape, dtype, layout)
    exe = harness("content")
    common = dict(sizes=x.shape, strides=x.stride(), dtype=E.DTYPE_CODES[dtype], kind=kind, eps=1e-3)
    fwd = E.run_orders(exe, "tv_forward", {"x": x}, {"loss": E.Out.contiguous((shape[0],))}, **common)
    R.check(fwd["loss"], R.tv(x, kind, 1e-3), "fp32")
    coef = torch.randn(shape[0])
    g = E.Out.like(x)
    bwd = E.run_orders(exe, "tv_backward", {"x": x, "coef": coef}, {"grad": g}, g_strides=g.stride, **common)
    R.check(bwd["grad"], R.tv_grad(x, kind, 1e-3, coef), R.PRECISION[dtype])


def _expanded(shape, view_shape, dtype, layout="contiguous"):
    """A (B, C, H, W) stride-0 view: random data of view_shape (1 where broadcast) expanded to shape."""
    return R.make(view_shape, dtype, layout).expand(shape)


# (name, x, t, l1): stride-0 views through the strided kernel, l1 through both kernels (ties, a NaN)
BROADCAST_CASES = [
    (
        "flat-l1",
        lambda p: R.make((2, 3, 5, 7), p[0], "contiguous"),
        lambda p: R.make((2, 3, 5, 7), p[1], "contiguous"),
        1,
    ),
    (
        "shared_target-l1",
        lambda p: R.make((3, 4, 5, 7), p[0], "contiguous"),
        lambda p: _expanded((3, 4, 5, 7), (1, 4, 5, 7), p[1]),
        1,
    ),
    (
        "expanded_x-l2",
        lambda p: _expanded((3, 4, 5, 7), (1, 4, 5, 7), p[0], "channels_last"),
        lambda p: R.make((3, 4, 5, 7), p[1], "channels_last"),
        0,
    ),
    (
        "both_broadcast-l1",
        lambda p: _expanded((2, 3, 5, 9), (2, 1, 5, 9), p[0]),
        lambda p: _expanded((2, 3, 5, 9), (1, 3, 1, 9), p[1]),
        1,
    ),
]


@pytest.mark.parametrize("pair", PAIRS[:2], ids=PIDS[:2])
@pytest.mark.parametrize("name,make_x,make_t,l1", BROADCAST_CASES, ids=[c[0] for c in BROADCAST_CASES])
def test_content_l1_and_stride_0(harness, pair, name, make_x, make_t, l1):
    x, t = make_x(pair), make_t(pair)
    if name == "flat-l1":  # exact ties (sign 0) where t is x, and a NaN
        t = torch.where(torch.rand(t.shape) < 0.3, x.to(t.dtype), t)
        x = x.clone()
        x[1, 2, 3, 4] = float("nan")
    common = dict(
        sizes=x.shape,
        strides=x.stride(),
        t_strides=t.stride(),
        dtype=E.DTYPE_CODES[pair[0]],
        t_dtype=E.DTYPE_CODES[pair[1]],
        dense=R.non_overlapping_and_dense(x),
        l1=l1,
    )
    exe = harness("content")
    fwd = E.run_orders(exe, "content_forward", {"x": x, "t": t}, {"loss": E.Out.contiguous(())}, **common)
    d = x.double() - t.double()
    R.check(fwd["loss"], d.abs().sum() if l1 else d.pow(2).sum(), "fp32")
    g = E.Out.like(x)
    coef = torch.tensor([0.75])
    bwd = E.run_orders(
        exe, "content_backward", {"x": x, "t": t, "coef": coef}, {"grad": g}, g_strides=g.stride, **common
    )
    R.check(bwd["grad"], 0.75 * (R.sign(d) if l1 else d), R.PRECISION[pair[0]])
    if name == "flat-l1":
        assert bwd["grad"][1, 2, 3, 4].isnan() and ((d == 0) == (bwd["grad"] == 0)).all()
