"""Super-resolution metrics (perceptual_kernels.api.metrics): SSIM, MATLAB's bicubic imresize, modcrop, the
bicubic baseline and the Set5 x4 figures of the literature."""

from __future__ import annotations

import itertools
import math
import pathlib

import numpy as np
import pytest
import torch
from _helpers import SHARED_DATA, shape_id
from PIL import Image

from perceptual_kernels.api import metrics
from perceptual_kernels.api.images import load_image

SET5_NAMES = ("baby", "bird", "butterfly", "head", "woman")


def set5_folder() -> pathlib.Path:
    """``PK_SHARED_DATA``/set5, or ../shared/data/set5 beside the checkout."""
    return SHARED_DATA / "set5"


# ---------------------------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------------------------


def slow_ssim(a: np.ndarray, b: np.ndarray, data_range: float, window: int = 11, sigma: float = 1.5) -> float:
    """Straightforward SSIM (Wang et al. 2004, ssim_index.m): loop over every window that fits in the image."""
    r = (window - 1) / 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    g /= g.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a = a.reshape(-1, *a.shape[-2:]).astype(np.float64)
    b = b.reshape(-1, *b.shape[-2:]).astype(np.float64)
    means = []
    for x_img, y_img in zip(a, b):
        values = []
        for i in range(x_img.shape[0] - window + 1):
            for j in range(x_img.shape[1] - window + 1):
                x = x_img[i : i + window, j : j + window]
                y = y_img[i : i + window, j : j + window]
                mx, my = (g * x).sum(), (g * y).sum()
                vx, vy = (g * (x - mx) ** 2).sum(), (g * (y - my) ** 2).sum()
                cov = (g * (x - mx) * (y - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        means.append(np.mean(values))
    return float(np.mean(means))


def test_ssim_identical_is_one():
    x = torch.rand(2, 3, 32, 29)
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim_y(x, x.clone(), shave=4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_decreases_with_noise():
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    noise = torch.randn_like(x)
    values = [metrics.ssim(x, x + s * noise) for s in (0.01, 0.05, 0.1, 0.3)]
    assert values[0] < 1.0
    assert all(a > b for a, b in itertools.pairwise(values)), values
    y_values = [metrics.ssim_y(x, (x + s * noise).clamp(0, 1), shave=2) for s in (0.01, 0.05, 0.1, 0.3)]
    assert all(a > b for a, b in itertools.pairwise(y_values)), y_values


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_matches_slow_reference(data_range):
    a = torch.rand(2, 3, 19, 23, dtype=torch.float64) * data_range
    b = (a + 0.2 * data_range * torch.randn_like(a)).clamp(0, data_range)
    ours = metrics.ssim(a, b, data_range=data_range)
    assert ours == pytest.approx(slow_ssim(a.numpy(), b.numpy(), data_range), abs=1e-6)
    # other window / sigma, float32 input
    ours = metrics.ssim(a.float(), b.float(), data_range=data_range, window=7, sigma=1.0)
    assert ours == pytest.approx(slow_ssim(a.numpy(), b.numpy(), data_range, 7, 1.0), abs=1e-6)


def test_ssim_y_matches_slow_reference_on_shaved_luma():
    a = torch.rand(1, 3, 24, 26, dtype=torch.float64)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    y = [16 + 65.481 * t[:, 0] + 128.553 * t[:, 1] + 24.966 * t[:, 2] for t in (a.numpy(), b.numpy())]
    expected = slow_ssim(y[0][..., 3:-3, 3:-3], y[1][..., 3:-3, 3:-3], 255.0)
    assert metrics.ssim_y(a, b, shave=3) == pytest.approx(expected, abs=1e-6)


def test_ssim_is_symmetric():
    a, b = torch.rand(1, 3, 30, 40), torch.rand(1, 3, 30, 40)
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-12)
    assert metrics.ssim_y(a, b, shave=2) == pytest.approx(metrics.ssim_y(b, a, shave=2), abs=1e-12)


def test_ssim_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))  # smaller than the window
    with pytest.raises(ValueError):
        metrics.ssim(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 21))
    with pytest.raises(ValueError):
        metrics.ssim_y(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20), shave=10)


# ---------------------------------------------------------------------------------------------------------------
# imresize
# ---------------------------------------------------------------------------------------------------------------


def test_imresize_identity_at_scale_one():
    x = torch.rand(2, 3, 17, 12, dtype=torch.float64)
    torch.testing.assert_close(metrics.imresize(x, 1.0), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(metrics.imresize(x, size=(17, 12)), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 0.3, 1.7, 2.0, 4.0], ids=lambda s: f"scale{s:g}")
def test_imresize_keeps_constants(scale):
    x = torch.full((1, 3, 23, 18), 0.37, dtype=torch.float64)
    out = metrics.imresize(x, scale)
    assert out.shape[-2:] == (math.ceil(23 * scale), math.ceil(18 * scale))
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((10, 9), 0.25, (3, 3)),
        ((10, 7), 1 / 3, (4, 3)),
        ((7, 5), 1.5, (11, 8)),
        ((12, 8), 0.5, (6, 4)),
        ((255, 257), 0.25, (64, 65)),
        ((5, 4), (2.0, 0.5), (10, 2)),
    ],
    ids=["10x9-scale0.25", "10x7-scale1_3", "7x5-scale1.5", "12x8-scale0.5", "255x257-scale0.25", "5x4-scale2x0.5"],
)
def test_imresize_output_size_is_ceil(size, scale, expected):
    assert metrics.imresize(torch.rand(1, 1, *size), scale).shape == (1, 1, *expected)


def mirror(j: int, n: int) -> int:
    """MATLAB's symmetric boundary (edge repeated) for a 0-based index."""
    return -j - 1 if j < 0 else (2 * n - 1 - j if j >= n else j)


def upsample2_matrix(n: int) -> np.ndarray:
    """The (2n, n) matrix of MATLAB's bicubic x2, derived by hand: output 2i samples input i - 1/4 and output
    2i + 1 input i + 1/4 (0-based), so with Keys a = -0.5 (k(1/4) = 111/128, k(3/4) = 29/128, k(5/4) = -9/128,
    k(7/4) = -3/128) the taps on inputs (i-2, i-1, i, i+1) are [-3, 29, 111, -9] / 128 and on (i-1, i, i+1, i+2)
    [-9, 111, 29, -3] / 128."""
    up = np.zeros((2 * n, n))
    for i in range(n):
        for row, first, taps in ((2 * i, i - 2, (-3, 29, 111, -9)), (2 * i + 1, i - 1, (-9, 111, 29, -3))):
            for k, w in enumerate(taps):
                up[row, mirror(first + k, n)] += w / 128
    return up


@pytest.mark.parametrize("n", [8, 10], ids=["8x8", "10x10"])
def test_imresize_half_uses_the_antialiased_kernel(n):
    # scale 1/2: the cubic stretched to width 8, sampled at half-pixel offsets: [-3, -9, 29, 111, 111, 29, -9, -3]
    # / 256 (Keys a = -0.5: k(1/4) = 111/128, k(3/4) = 29/128, k(5/4) = -9/128, k(7/4) = -3/128, halved);
    # output i (0-based) centred on input 2i + 1/2, so its taps are inputs 2i - 3 .. 2i + 4
    kernel = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
    down = np.zeros((n // 2, n))
    for i in range(n // 2):
        for k, w in enumerate(kernel):
            down[i, mirror(2 * i - 3 + k, n)] += w
    x = np.random.default_rng(n).random((n, n))
    expected = down @ x @ down.T
    out = metrics.imresize(torch.from_numpy(x)[None, None], 0.5)[0, 0].numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_imresize_double_uses_the_cubic_polyphase_taps():
    x = np.random.default_rng(1).random((7, 9))
    expected = upsample2_matrix(7) @ x @ upsample2_matrix(9).T
    out = metrics.imresize(torch.from_numpy(x)[None, None], 2.0)[0, 0].numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # a row [1 2 3 4] doubled: (140 * 1 - 12 * 2) / 128 and (102 * 1 + 29 * 2 - 3 * 3) / 128 first
    row = metrics.imresize(torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]], dtype=torch.float64), size=(1, 8))[0, 0, 0]
    assert row[:2].tolist() == pytest.approx([0.90625, 1.1796875], abs=1e-12)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((40, 36), (10, 9)), ((40, 36), (20, 18)), ((10, 9), (40, 36)), ((37, 29), (13, 50)), ((64, 64), (21, 21))],
    ids=shape_id,
)
def test_imresize_interior_matches_pillow_bicubic(shape, size):
    # Pillow's BICUBIC is the same antialiased Keys a = -0.5 filter with the same pixel-centre mapping; it only
    # treats the borders differently (truncated, renormalised kernel instead of mirroring), so compare inside
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    ours = metrics.imresize(torch.from_numpy(x).double()[None, None], size=size)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(x, "F").resize((size[1], size[0]), Image.BICUBIC))
    mh = math.ceil(2.5 * max(1, size[0] / shape[0])) + 1
    mw = math.ceil(2.5 * max(1, size[1] / shape[1])) + 1
    np.testing.assert_allclose(ours[mh:-mh, mw:-mw], pil[mh:-mh, mw:-mw], rtol=0, atol=1e-6)


def test_imresize_dtype_and_no_clamping():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 3:5, 3:5] = 1.0
    out = metrics.imresize(x, 2.0)
    assert out.dtype == torch.float32
    assert out.max() > 1.0 and out.min() < 0.0  # cubic overshoot is kept
    assert metrics.imresize(x.double(), 0.5).dtype == torch.float64
    with pytest.raises(ValueError):
        metrics.imresize(x, 0.5, size=(4, 4))
    with pytest.raises(ValueError):
        metrics.imresize(x)
    with pytest.raises(ValueError):
        metrics.imresize(x, -1.0)


# ---------------------------------------------------------------------------------------------------------------
# modcrop, bicubic baseline, evaluate_sr
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((1, 3, 255, 257), 4, (1, 3, 252, 256)),
        ((3, 228, 344), 3, (3, 228, 342)),
        ((1, 3, 16, 16), 4, (1, 3, 16, 16)),
        ((2, 1, 9, 7), 1, (2, 1, 9, 7)),
        ((9, 11), 8, (8, 8)),
    ],
    ids=lambda v: shape_id(v) if isinstance(v, tuple) else f"mod{v}",
)
def test_modcrop_shapes(shape, scale, expected):
    x = torch.rand(shape)
    out = metrics.modcrop(x, scale)
    assert out.shape == expected
    assert torch.equal(out, x[..., : expected[-2], : expected[-1]])  # top-left aligned


def test_modcrop_rejects_bad_scale():
    with pytest.raises(ValueError):
        metrics.modcrop(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError):
        metrics.modcrop(torch.rand(1, 3, 8, 8), 2.0)


def test_bicubic_baseline_shape_and_8bit_values():
    hr = torch.rand(1, 3, 37, 42)
    sr = metrics.bicubic_baseline(hr, 4)
    assert sr.shape == (1, 3, 36, 40) and sr.dtype == hr.dtype
    levels = sr.double() * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4) and sr.min() >= 0 and sr.max() <= 1
    flat = torch.full((1, 3, 24, 24), 100 / 255)
    torch.testing.assert_close(metrics.bicubic_baseline(flat, 3), flat)


def test_evaluate_sr_with_upscale_callable():
    # float64 so the callable's path and the baseline's round identically at the 8-bit boundaries
    images = {"a": torch.rand(1, 3, 30, 34, dtype=torch.float64), "b": torch.rand(3, 29, 32, dtype=torch.float64)}
    seen = []

    def bicubic(lr):
        seen.append((tuple(lr.shape), lr.dtype))
        return metrics.imresize(lr, 2.0)

    base = metrics.evaluate_sr(images, 2)
    ours = metrics.evaluate_sr(images, 2, bicubic)
    assert seen == [((1, 3, 15, 17), torch.float64), ((3, 14, 16), torch.float64)]
    assert set(base["per_image"]) == {"a", "b"}
    for name in images:
        for key in ("psnr_y", "ssim_y"):
            assert ours["per_image"][name][key] == pytest.approx(base["per_image"][name][key], abs=1e-9)
    assert base["mean"]["psnr_y"] == pytest.approx(np.mean([v["psnr_y"] for v in base["per_image"].values()]))
    # the bicubic baseline is what evaluate_sr compares against the modcropped ground truth
    hr = metrics.modcrop(images["a"], 2)
    sr = metrics.bicubic_baseline(images["a"], 2)
    assert base["per_image"]["a"]["psnr_y"] == pytest.approx(metrics.psnr_y(sr, hr, shave=2), abs=1e-6)
    assert base["per_image"]["a"]["ssim_y"] == pytest.approx(metrics.ssim_y(sr, hr, shave=2), abs=1e-6)
    with pytest.raises(ValueError):
        metrics.evaluate_sr(images, 2, lambda lr: lr)  # wrong output size


def test_set5_x4_bicubic_matches_the_literature():
    folder = set5_folder()
    paths = {name: folder / f"{name}.png" for name in SET5_NAMES}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        pytest.skip(f"Set5 images not present: {', '.join(missing)} (set PK_SHARED_DATA to the data folder)")
    result = metrics.evaluate_sr({name: load_image(p) for name, p in paths.items()}, 4)
    per_image, mean = result["per_image"], result["mean"]
    print({name: (round(v["psnr_y"], 3), round(v["ssim_y"], 4)) for name, v in per_image.items()}, mean)
    # Johnson et al. (and the SRCNN-era tables): bicubic x4 on Set5, Y of BT.601, 4 pixels shaved
    assert abs(mean["psnr_y"] - 28.43) <= 0.01
    assert abs(per_image["baby"]["psnr_y"] - 31.78) <= 0.01
    assert abs(mean["ssim_y"] - 0.8114) <= 5e-4
