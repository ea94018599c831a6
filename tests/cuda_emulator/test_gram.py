"""Gram matrix and style loss kernels (csrc/cuda/gram.cuh) on the emulator, forward and backward, every product
variant (fp32 FMA, tf32 / fp16 / bf16 WMMA), layouts, odd sizes and both split-K regimes (132 and 4 SMs)."""

from __future__ import annotations

import emulator as E
import pytest
import references as R
import torch

# (name, dtype of x, tf32 allowed, precision of the products)
VARIANTS = [
    ("simt", torch.float32, False, "fp32"),
    ("tf32", torch.float32, True, "tf32"),
    ("fp16", torch.float16, False, "fp16"),
    ("bf16", torch.bfloat16, False, "bf16"),
]
VIDS = [v[0] for v in VARIANTS]
# (shape, layout, SMs): unsplit tiny / one tile row + partial / two tile rows, sliced; tall-skinny split-K
SHAPES = [
    ((2, 3, 5, 7), "contiguous", 132),
    ((1, 70, 3, 11), "channels_last", 132),
    ((2, 17, 6, 11), "sliced", 4),
    ((1, 31, 48, 48), "contiguous", 4),  # M = 2304: 72 steps, 4 SMs -> 8 splits of 9 steps
    ((1, 33, 40, 52), "channels_last", 132),  # M = 2080: 65 steps -> 8 splits (at least 8 steps each)
]
SIDS = [f"{'x'.join(map(str, s))}-{lay}-sm{sms}" for s, lay, sms in SHAPES]


def common(x: torch.Tensor, variant, sms: int) -> dict:
    _, dtype, tf32, _ = variant
    return dict(sizes=x.shape, strides=x.stride(), dtype=E.DTYPE_CODES[dtype], tf32=tf32, sms=sms)


@pytest.mark.parametrize("variant", VARIANTS, ids=VIDS)
@pytest.mark.parametrize("shape,layout,sms", SHAPES, ids=SIDS)
def test_gram_forward(harness, variant, shape, layout, sms):
    x = R.make(shape, variant[1], layout)
    B, C = shape[:2]
    out = E.run_orders(
        harness("gram"),
        "gram_forward",
        {"x": x},
        {"g": E.Out.contiguous((B, C, C))},
        scale=0.25,
        out_dtype=0,
        **common(x, variant, sms),
    )
    R.check(out["g"], R.gram(x, 0.25), variant[3])


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float64], ids=["f16", "bf16", "f64"])
def test_gram_forward_out_dtype(harness, out_dtype):
    x = R.make((2, 9, 7, 5), torch.float32, "contiguous")
    out = E.run_orders(
        harness("gram"),
        "gram_forward",
        {"x": x},
        {"g": E.Out.contiguous((2, 9, 9), out_dtype)},
        scale=1.0,
        out_dtype=E.DTYPE_CODES[out_dtype],
        **common(x, VARIANTS[0], 132),
    )
    R.check(out["g"], R.gram(x, 1.0), {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp32"}[out_dtype])


# target rows: single (R = 1, broadcast), per-sample (R = B), indexed (R = 3 through style_index)
TARGETS = ["single", "per_sample", "indexed"]


# the tensor-core variants share the epilogue of the SIMT one: they run with indexed targets only
STYLE_CASES = [
    pytest.param(target_kind, variant, split, id=f"{target_kind}-{vid}-{'split' if split else 'unsplit'}")
    for split in (False, True)
    for variant, vid in zip(VARIANTS, VIDS)
    for target_kind in TARGETS
    if variant[0] == "simt" or target_kind == "indexed"
]


@pytest.mark.parametrize("target_kind,variant,split", STYLE_CASES)
def test_style_forward(harness, target_kind, variant, split):
    shape = (2, 19, 40, 40) if split else (3, 67, 4, 5)
    x = R.make(shape, variant[1], "sliced" if split else "channels_last")
    B, C = shape[:2]
    rows = {"single": 1, "per_sample": B, "indexed": 3}[target_kind]
    g = R.gram(R.make(shape, variant[1], "contiguous"), 0.1)
    target = g[torch.randint(0, B, (rows,))].to(torch.float32)
    if target_kind == "per_sample":
        target = target.transpose(1, 2)  # strided target rows
    index = torch.randint(0, rows, (B,)) if target_kind == "indexed" else None
    inputs = {"x": x, "target": target} | ({"index": index} if index is not None else {})
    out = E.run_orders(
        harness("gram"),
        "style_forward",
        inputs,
        {"loss": E.Out.contiguous((B,)), "diff": E.Out.contiguous((B, C, C))},
        scale=0.1,
        target_dtype=0,
        target_rows=rows,
        t_strides=target.stride(),
        **common(x, variant, 4),
    )
    loss, d = R.style(x, target, index, 0.1)
    R.check(out["diff"], d, variant[3])
    R.check(out["loss"], loss, variant[3])


def test_style_forward_bad_index_gives_nan(harness):
    x = R.make((2, 5, 3, 3), torch.float32, "contiguous")
    target = torch.randn(2, 5, 5, dtype=torch.float64)
    out = E.run_orders(
        harness("gram"),
        "style_forward",
        {"x": x, "target": target, "index": torch.tensor([1, 7])},
        {"loss": E.Out.contiguous((2,)), "diff": E.Out.contiguous((2, 5, 5))},
        scale=1.0,
        target_dtype=3,
        target_rows=2,
        t_strides=target.stride(),
        **common(x, VARIANTS[0], 132),
    )
    loss, d = R.style(x, target, torch.tensor([1, 1]), 1.0)
    R.check(out["diff"][0], d[0], "fp32")
    assert out["diff"][1].isnan().all() and out["loss"][1].isnan() and not out["loss"][0].isnan()


BWD_SHAPES = [
    ((2, 3, 5, 7), "contiguous"),
    ((1, 70, 3, 23), "channels_last"),
    ((2, 33, 9, 8), "sliced"),
]
BIDS = [f"{'x'.join(map(str, s))}-{lay}" for s, lay in BWD_SHAPES]


@pytest.mark.parametrize("variant", VARIANTS, ids=VIDS)
@pytest.mark.parametrize("shape,layout", BWD_SHAPES, ids=BIDS)
def test_gram_backward(harness, variant, shape, layout):
    x = R.make(shape, variant[1], layout)
    B, C = shape[:2]
    grad = torch.randn(B, C, C).transpose(1, 2) if layout == "sliced" else torch.randn(B, C, C)
    dx = E.Out.like(x)
    out = E.run_orders(
        harness("gram"),
        "gram_backward",
        {"x": x, "d": grad},
        {"dx": dx},
        scale=0.5,
        dx_strides=dx.stride,
        d_strides=grad.stride(),
        **common(x, variant, 132),
    )
    R.check(out["dx"], R.sym_dot(grad, x, torch.full((B,), 0.5)), variant[3])


@pytest.mark.parametrize("variant", [VARIANTS[0], VARIANTS[2]], ids=["simt", "fp16"])
def test_style_backward(harness, variant):
    x = R.make((3, 40, 6, 7), variant[1], "channels_last")
    diff = torch.randn(3, 40, 40)
    coef = torch.randn(6)[::2]  # strided coef
    dx = E.Out.like(x)
    out = E.run_orders(
        harness("gram"),
        "style_backward",
        {"x": x, "d": diff, "coef": coef},
        {"dx": dx},
        coef_stride=coef.stride(0),
        dx_strides=dx.stride,
        d_strides=diff.stride(),
        **common(x, variant, 132),
    )
    R.check(out["dx"], R.sym_dot(diff, x, coef), variant[3])


# l1: sign(D) in place of D and sum |D| (the shared epilogue, so a few variants and target kinds cover it)
L1_CASES = [
    pytest.param("single", VARIANTS[0], False, id="single-simt-unsplit"),
    pytest.param("per_sample", VARIANTS[1], False, id="per_sample-tf32-unsplit"),
    pytest.param("indexed", VARIANTS[2], True, id="indexed-fp16-split"),
]


@pytest.mark.parametrize("target_kind,variant,split", L1_CASES)
def test_style_forward_l1(harness, target_kind, variant, split):
    shape = (2, 19, 40, 40) if split else (3, 67, 4, 5)
    x = R.make(shape, variant[1], "sliced" if split else "channels_last")
    B, C = shape[:2]
    rows = {"single": 1, "per_sample": B, "indexed": 3}[target_kind]
    index = torch.randint(0, rows, (B,)) if target_kind == "indexed" else None
    target = R.style_target_off_zero(R.gram(x, 0.1), rows, index).float()
    target[0, 1, 2] = float("nan")  # its sign stays NaN, never 0
    inputs = {"x": x, "target": target} | ({"index": index} if index is not None else {})
    out = E.run_orders(
        harness("gram"),
        "style_forward",
        inputs,
        {"loss": E.Out.contiguous((B,)), "diff": E.Out.contiguous((B, C, C))},
        scale=0.1,
        target_dtype=0,
        target_rows=rows,
        t_strides=target.stride(),
        l1=1,
        **common(x, variant, 4),
    )
    _, d = R.style(x, target, index, 0.1)
    R.check(out["diff"], R.sign(d), "fp32")
    R.check(out["loss"], d.abs().sum((1, 2)), variant[3])
