"""Triton Gram / style-loss kernels: split-K, multi-tile symmetric mirroring, determinism, precision policy."""

from __future__ import annotations

import pytest
import torch
from _helpers import DEVICE, assert_close, case_id, dtype_id, make_input

pytestmark = pytest.mark.triton
gram = pytest.importorskip("perceptual_kernels.backends.triton.gram")


def _reference(x, scale):
    f = x.double().flatten(2)
    return f @ f.transpose(1, 2) * scale


@pytest.mark.parametrize("splits", [1, 2, 5], ids=lambda n: f"split_k{n}")
@pytest.mark.parametrize(
    "shape,layout",
    [((2, 130, 5, 9), "contiguous"), ((1, 65, 17, 3), "channels_last"), ((3, 17, 31, 7), "sliced")],
    ids=case_id,
)
def test_split_k_and_mirrored_tiles(monkeypatch, splits, shape, layout):
    monkeypatch.setattr(gram, "_FORCE_SPLIT", splits)
    x = make_input(shape, layout)
    C, M = shape[1], shape[2] * shape[3]
    scale = 1.0 / (C * M)
    expected = _reference(x, scale)
    assert_close(gram.gram_forward(x, scale, torch.float32), expected, torch.float32, "gram")
    target = torch.randn(4, C, C, device=DEVICE) * 0.01
    index = torch.arange(shape[0], device=DEVICE) % 4
    per_sample, diff = gram.style_loss_forward(x, target, index, scale, 0)
    expected_diff = expected - target.double()[index]
    assert_close(diff, expected_diff, torch.float32, "D")
    assert_close(per_sample, (expected_diff**2).sum((1, 2)), torch.float32, "loss")
    coef = torch.rand(shape[0], device=DEVICE)
    dx = gram.style_loss_backward(coef, diff, x)
    f = x.double().flatten(2)
    expected_dx = coef.double()[:, None, None] * ((expected_diff + expected_diff.transpose(1, 2)) @ f)
    assert_close(dx, expected_dx.view(x.shape), torch.float32, "dx")


@pytest.mark.parametrize("splits", [1, 3], ids=lambda n: f"split_k{n}")
def test_style_l1_stores_the_sign(monkeypatch, splits):
    """l1: sum |G - A| per sample and sign(G - A) in place of D, from both epilogues (direct and split-K reduce);
    targets 0.05 away from G on either side (no near-ties), a NaN target entry keeps a NaN sign."""
    monkeypatch.setattr(gram, "_FORCE_SPLIT", splits)
    x = make_input((2, 70, 5, 7), "channels_last")
    scale = 1.0 / (70 * 35)
    expected = _reference(x, scale)
    side = torch.randint(0, 2, (2, 70, 70), device=DEVICE) * 2 - 1
    target = (expected + side * (0.05 + torch.rand(2, 70, 70, device=DEVICE))).float()
    target[1, 3, 4] = float("nan")
    per_sample, sign = gram.style_loss_forward(x, target, None, scale, 1)
    d = expected - target.double()
    assert_close(sign, torch.where(d > 0, 1.0, torch.where(d < 0, -1.0, d)), torch.float32, "sign(D)")
    assert_close(per_sample, d.abs().sum((1, 2)), torch.float32, "loss")
    assert per_sample[1].isnan() and not per_sample[0].isnan()


def test_split_count_covers_the_gpu(monkeypatch):
    """relu1_1 of a 512 image: one 64x64 tile, so the reduction over M = 262144 is split ~2x the SM count."""
    monkeypatch.setattr(gram, "num_sms", lambda device: 132)
    monkeypatch.setattr(gram, "interpreting", lambda: False)
    splits, per_split = gram._num_splits(tiles=1, batch=1, M=512 * 512, block_k=32, device=DEVICE)
    assert 200 <= splits <= 264 and splits * per_split >= 512 * 512 and per_split % 32 == 0
    assert gram._num_splits(tiles=10, batch=16, M=4096, block_k=32, device=DEVICE)[0] == 1


def test_results_are_deterministic(monkeypatch):
    monkeypatch.setattr(gram, "_FORCE_SPLIT", 4)
    x = make_input((2, 70, 9, 11))
    target = torch.randn(70, 70, device=DEVICE)[None]
    first = gram.style_loss_forward(x, target, None, 1e-3, 0)
    for _ in range(2):
        again = gram.style_loss_forward(x, target, None, 1e-3, 0)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_fp32_precision_policy():
    from perceptual_kernels.backends.triton._common import dot_precision

    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert dot_precision(torch.float32) == "ieee"
        torch.set_float32_matmul_precision("high")
        assert dot_precision(torch.float32) == "tf32"
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_low_precision_is_scaled_before_the_cast(dtype):
    """Sums of products far beyond the fp16 range must come out finite once normalised."""
    x = (torch.rand(1, 16, 64, 64, device=DEVICE) * 40 + 200).to(dtype)  # raw Gram entries ~ 2e8 > fp16 max
    out = gram.gram_forward(x, 1.0 / (16 * 64 * 64), dtype)
    assert out.isfinite().all()
    assert_close(out, _reference(x, 1.0 / (16 * 64 * 64)), dtype, "gram")
