"""Instance norm / CIN kernels (csrc/cuda/instance_norm.cuh) on the emulator: fused and split-plane kernels,
vector and strided paths, plain / affine / CIN table gathers with ReLU, forward and backward, fp32 / fp16 / bf16."""

from __future__ import annotations

import emulator as E
import pytest
import references as R
import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIDS = ["f32", "f16", "bf16"]
# (shape, layout, SMs): fused kernel (odd plane, vector plane, channels_last, sliced), split-plane kernels
CASES = [
    ((2, 3, 5, 7), "contiguous", 132),
    ((2, 5, 16, 16), "contiguous", 132),  # N = 256: 16-byte vectors
    ((1, 4, 17, 31), "channels_last", 132),
    ((2, 3, 9, 13), "sliced", 4),
    ((1, 2, 96, 96), "contiguous", 4),  # N = 9216, 2 planes < 2 * 4 SMs: 2 splits of 5120 (vector path)
    ((1, 1, 100, 131), "sliced", 132),  # N = 13100: 3 splits of 5120 (strided path)
]
CIDS = [f"{'x'.join(map(str, s))}-{lay}-sm{sms}" for s, lay, sms in CASES]
# affine: none, gamma / beta (C,) with ReLU, CIN: (rows, C) tables gathered through style_index with ReLU
AFFINE = ["plain", "affine_relu", "cin_relu"]


def affine_inputs(kind: str, B: int, C: int):
    if kind == "plain":
        return None, None, None
    rows = 1 if kind == "affine_relu" else 3
    index = torch.randint(0, rows, (B,)) if kind == "cin_relu" else None
    return 1 + 0.5 * torch.randn(rows, C), 0.3 * torch.randn(rows, C), index


def tables(gamma, beta, index) -> tuple[dict, dict]:
    inputs, values = {}, {}
    if gamma is not None:
        inputs |= {"gamma": gamma, "beta": beta}
        values |= {"gamma_rows": gamma.shape[0], "beta_rows": beta.shape[0]}
    if index is not None:
        inputs["index"] = index
    return inputs, values


# split planes (H*W > 4096) in fp16 / bf16 run with the CIN case only (it covers the others' code paths)
IN_CASES = [
    pytest.param(shape, layout, sms, dtype, affine, id=f"{cid}-{did}-{affine}")
    for (shape, layout, sms), cid in zip(CASES, CIDS)
    for dtype, did in zip(DTYPES, DIDS)
    for affine in AFFINE
    if affine == "cin_relu" or dtype == torch.float32 or shape[2] * shape[3] <= 4096
]


@pytest.mark.parametrize("shape,layout,sms,dtype,affine", IN_CASES)
def test_instance_norm_forward_backward(harness, shape, layout, sms, dtype, affine):
    B, C = shape[:2]
    x = R.make(shape, dtype, layout, scale=2.0) + 0.5
    gamma, beta, index = affine_inputs(affine, B, C)
    relu = affine != "plain"
    extra_in, extra = tables(gamma, beta, index)
    exe = harness("inorm")
    y = E.Out.like(x)
    stats = E.Out.contiguous((B, C))
    fwd = E.run_orders(
        exe,
        "inorm_forward",
        {"x": x} | extra_in,
        {"y": y, "mean": stats, "rstd": stats},
        sizes=x.shape,
        strides=x.stride(),
        y_strides=y.stride,
        dtype=E.DTYPE_CODES[dtype],
        eps=1e-5,
        relu=relu,
        sms=sms,
        **extra,
    )
    ref_y, ref_mean, ref_rstd = R.inorm(x, gamma, beta, index, 1e-5, relu)
    prec = R.PRECISION[dtype]
    R.check(fwd["mean"], ref_mean, "fp32")
    R.check(fwd["rstd"], ref_rstd, "fp32")
    R.check(fwd["y"], ref_y, prec)

    dy = R.make(shape, dtype, "channels_last" if layout == "sliced" else layout)
    dx = E.Out.like(x)
    bwd = E.run_orders(
        exe,
        "inorm_backward",
        {"dy": dy, "x": x, "mean": fwd["mean"], "rstd": fwd["rstd"]} | extra_in,
        {"dx": dx, "dgamma": stats, "dbeta": stats},
        sizes=x.shape,
        strides=x.stride(),
        dy_strides=dy.stride(),
        dx_strides=dx.stride,
        dtype=E.DTYPE_CODES[dtype],
        relu=relu,
        need_affine_grad=1,
        sms=sms,
        **extra,
    )
    ref_dx, ref_dgamma, ref_dbeta = R.inorm_backward(dy, x, fwd["mean"], fwd["rstd"], gamma, beta, index, relu)
    R.check(bwd["dbeta"], ref_dbeta, "fp32")
    R.check(bwd["dgamma"], ref_dgamma, "fp32")
    R.check(bwd["dx"], ref_dx, prec)


def test_instance_norm_bad_index_gives_nan(harness):
    x = R.make((2, 3, 4, 4), torch.float32, "contiguous")
    gamma, beta = torch.randn(2, 3), torch.randn(2, 3)
    y = E.Out.like(x)
    stats = E.Out.contiguous((2, 3))
    out = E.run_orders(
        harness("inorm"),
        "inorm_forward",
        {"x": x, "gamma": gamma, "beta": beta, "index": torch.tensor([0, 5])},
        {"y": y, "mean": stats, "rstd": stats},
        sizes=x.shape,
        strides=x.stride(),
        y_strides=y.stride,
        dtype=0,
        eps=1e-5,
        relu=0,
        sms=132,
        gamma_rows=2,
        beta_rows=2,
    )
    assert out["y"][1].isnan().all() and not out["y"][0].isnan().any()
