"""Deep Image Prior nets, codes and the downsampler (perceptual_kernels.api.dip_nets): CPU, small nets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perceptual_kernels.api import dip_nets as dn


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def authors_skip_params(in_ch: int, down, up, skip, out_ch: int = 3, kd: int = 3, ku: int = 3, ks: int = 1) -> int:
    """Parameter count of the authors' skip() layer list (conv weights + biases, BN affine), written out by hand."""

    def conv(i, o, k):
        return i * o * k * k + o

    def bn(c):
        return 2 * c

    total, depth = 0, in_ch
    for i in range(len(down)):
        if skip[i]:
            total += conv(depth, skip[i], ks) + bn(skip[i])
        total += conv(depth, down[i], kd) + bn(down[i]) + conv(down[i], down[i], kd) + bn(down[i])
        k = up[i + 1] if i < len(down) - 1 else down[i]
        total += bn(skip[i] + k) + conv(skip[i] + k, up[i], ku) + bn(up[i]) + conv(up[i], up[i], 1) + bn(up[i])
        depth = down[i]
    return total + conv(up[0], out_ch, 1)


# ---------------------------------------------------------------------------------------------------------------
# skip / hourglass / unet
# ---------------------------------------------------------------------------------------------------------------


def test_default_skip_shape_range_and_param_count():
    net = dn.skip()
    count = n_params(net)
    print(f"default skip(32 -> 3, 5 x 128, skip 4) parameters: {count}")
    assert count == authors_skip_params(32, (128,) * 5, (128,) * 5, (4,) * 5)
    assert abs(count - 2.2e6) / 2.2e6 < 0.10
    assert net.multiple == dn.required_multiple(net) == 32 and net.min_size == 64
    out = net(dn.get_noise(32, (64, 64)))
    assert out.shape == (1, 3, 64, 64)
    assert out.min() > 0 and out.max() < 1


@pytest.mark.parametrize("upsample", dn.UPSAMPLE_MODES)
@pytest.mark.parametrize("downsample", dn.DOWNSAMPLE_MODES)
def test_small_skip_shapes(upsample, downsample):
    net = dn.skip(4, 1, (8, 8, 16), (8, 8, 16), (2, 0, 2), upsample=upsample, downsample=downsample)
    assert net.multiple == 8 and net.min_size == 16
    out = net(torch.rand(2, 4, 16, 40))
    assert out.shape == (2, 1, 16, 40)
    assert n_params(net) == authors_skip_params(4, (8, 8, 16), (8, 8, 16), (2, 0, 2), out_ch=1)


def test_skip_options_and_gradients():
    net = dn.skip(
        3,
        2,
        (4, 8),
        (6, 4),
        (3, 3),
        kernel_down=5,
        kernel_up=1,
        kernel_skip=3,
        pad="zero",
        act="elu",
        need_sigmoid=False,
        bn=False,
        need_bias=False,
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    out = net(torch.randn(1, 3, 4, 8))  # zero padding: any multiple of 4 works
    assert out.shape == (1, 2, 4, 8)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert dn.skip(3, 3, (4, 4), (4, 4), (1, 1), kernel_down=5).min_size == 4 * 3  # deepest map > 2 (pad 2)


def test_skip_input_checks():
    net = dn.skip(2, 3, (4,) * 3, (4,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 2, 20, 16))
    with pytest.raises(ValueError, match="at least 16"):
        net(torch.rand(1, 2, 8, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net(torch.rand(2, 16, 16))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels_down": (8,) * 3, "channels_up": (8,) * 3, "channels_skip": (4,) * 2},
        {"channels_down": (8,) * 2, "channels_up": (8,) * 3, "channels_skip": (4,) * 3},
    ],
    ids=["skip_shorter", "down_shorter"],
)
def test_skip_mismatched_lengths(kwargs):
    with pytest.raises(ValueError, match="same length"):
        dn.skip(4, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"upsample": "bicubic"}, "upsample"),
        ({"downsample": "conv"}, "downsample"),
        ({"pad": "circular"}, "pad"),
        ({"act": "tanh"}, "act"),
        ({"kernel_up": 4}, "odd"),
        ({"channels_down": ()}, "channels_down"),
        ({"channels_skip": (4, -1, 4, 4, 4)}, r"channels_skip\[1\]"),
    ],
    ids=[
        "upsample=bicubic",
        "downsample=conv",
        "pad=circular",
        "act=tanh",
        "kernel_up=4",
        "channels_down=empty",
        "channels_skip=4x-1x4x4x4",
    ],
)
def test_skip_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dn.skip(4, **kwargs)


def test_hourglass_is_skip_without_skip_branches():
    hg = dn.hourglass(32)
    ref = dn.skip(32, channels_skip=(0,) * 5)
    print(f"hourglass(32 -> 3, 5 x 128) parameters: {n_params(hg)}")
    assert n_params(hg) == n_params(ref) == authors_skip_params(32, (128,) * 5, (128,) * 5, (0,) * 5)
    assert [tuple(p.shape) for p in hg.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    scales = [m for m in hg.modules() if type(m).__name__ == "_SkipScale"]
    assert len(scales) == 5 and all(s.skip is None for s in scales)
    small = dn.hourglass(2, 3, (4, 8, 8), upsample="nearest")
    assert small.multiple == 8
    assert small(dn.get_noise(2, (16, 24), "meshgrid")).shape == (1, 3, 16, 24)


@pytest.mark.parametrize("downsample", ["max", "stride"])
@pytest.mark.parametrize("upsample", dn.UPSAMPLE_MODES)
def test_unet_shapes(downsample, upsample):
    net = dn.unet(5, 2, (4, 8, 16), upsample=upsample, downsample=downsample)
    assert net.multiple == dn.required_multiple(net) == 4 and net.min_size == 8
    out = net(torch.rand(2, 5, 8, 12))
    assert out.shape == (2, 2, 8, 12)
    assert out.min() > 0 and out.max() < 1
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 5, 10, 12))


def test_unet_default_and_structure():
    net = dn.unet(32)
    print(f"unet(32 -> 3, (32, 64, 128, 256)) parameters: {n_params(net)}")
    assert net.multiple == 8
    assert len(net.encoders) == 4 and len(net.ups) == len(net.fuses) == 3
    assert net.fuses[0][0][-1].in_channels == 2 * 32  # concatenation skip at full resolution
    plain = dn.unet(3, 3, (4, 8), bn=False, pad="zero", need_sigmoid=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert plain(torch.randn(1, 3, 2, 4)).shape == (1, 3, 2, 4)


def test_get_net_by_name():
    assert isinstance(
        dn.get_net("skip", 4, 1, channels_down=(4, 4), channels_up=(4, 4), channels_skip=(2, 2)), dn.SkipNet
    )
    assert isinstance(dn.get_net("UNet", 4, channels=(4, 8)), dn.UNet)
    hg = dn.get_net("hourglass", 4, 2, channels=(4, 4))
    assert hg.out_channels == 2 and hg.multiple == 4
    with pytest.raises(ValueError, match="skip, unet, hourglass"):
        dn.get_net("resnet", 4)
    with pytest.raises(TypeError):
        dn.get_net("unet", 4, channels_skip=(1,))
    with pytest.raises(TypeError):
        dn.required_multiple(nn.Conv2d(1, 1, 1))


def test_concat_crops_to_smaller():
    a = torch.arange(36.0).view(1, 1, 6, 6)
    b = torch.zeros(1, 2, 4, 5)
    out = dn._concat_cropped(a, b)
    assert out.shape == (1, 3, 4, 5)
    assert torch.equal(out[:, :1], a[:, :, 1:5, 0:5])


# ---------------------------------------------------------------------------------------------------------------
# task defaults
# ---------------------------------------------------------------------------------------------------------------


def test_task_defaults():
    den = dn.task_defaults("denoising")
    assert den["input_depth"] == 32
    assert den["channels_down"] == den["channels_up"] == (128,) * 5
    assert den["channels_skip"] == (4,) * 5 and den["upsample"] == "bilinear" and den["pad"] == "reflection"
    depth = den.pop("input_depth")
    assert n_params(dn.get_net("skip", depth, 3, **den)) == n_params(dn.skip())
    assert dn.task_defaults("denoising")["input_depth"] == 32  # a fresh dict every call
    assert dn.task_defaults("denoise") == dn.task_defaults("Denoising")

    sr = dn.task_defaults("super-resolution")
    assert sr == dn.task_defaults("denoising") == dn.task_defaults("sr") == dn.task_defaults("sr8")

    inp = dn.task_defaults("inpaint")
    assert inp == dn.task_defaults("inpainting")
    assert inp["channels_skip"] == (128,) * 5 and inp["upsample"] == "nearest" and inp["input_depth"] == 32
    assert inp["channels_down"] == inp["channels_up"] == (128,) * 5
    depth = inp.pop("input_depth")
    inet = dn.get_net("skip", depth, 3, **inp)
    assert {m.mode for m in inet.modules() if isinstance(m, nn.Upsample)} == {"nearest"}
    print(f"inpainting skip(32 -> 3, 5 x 128, skip 128) parameters: {n_params(inet)}")
    assert n_params(inet) == authors_skip_params(32, (128,) * 5, (128,) * 5, (128,) * 5)

    with pytest.raises(ValueError, match="denoising, super_resolution, inpainting"):
        dn.task_defaults("deblurring")


# ---------------------------------------------------------------------------------------------------------------
# get_noise
# ---------------------------------------------------------------------------------------------------------------


def test_get_noise_uniform():
    z = dn.get_noise(32, (24, 40))
    assert z.shape == (1, 32, 24, 40) and z.dtype == torch.float32
    assert z.min() >= 0 and z.max() < 0.1
    assert 0.04 < z.mean() < 0.06  # U[0, 1/10) has mean 0.05
    big = dn.get_noise(3, 16, scale=2.0)
    assert big.shape == (1, 3, 16, 16) and big.max() > 1.0 and big.max() < 2.0


def test_get_noise_seeding():
    a = dn.get_noise(4, (8, 8), generator=torch.Generator().manual_seed(0))
    b = dn.get_noise(4, (8, 8), generator=torch.Generator().manual_seed(0))
    c = dn.get_noise(4, (8, 8), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = dn.get_noise(4, (8, 8))
    torch.manual_seed(5)
    assert torch.equal(d, dn.get_noise(4, (8, 8)))
    n = dn.get_noise(2, (64, 64), distribution="normal", scale=1.0, generator=torch.Generator().manual_seed(0))
    assert n.min() < 0 and abs(n.std().item() - 1.0) < 0.1


def test_get_noise_meshgrid():
    g = dn.get_noise(2, (5, 9), kind="meshgrid")
    assert g.shape == (1, 2, 5, 9)
    assert torch.allclose(g[0, 0, 3], torch.linspace(0, 1, 9))  # x along W
    assert torch.allclose(g[0, 1, :, 7], torch.linspace(0, 1, 5))  # y along H
    assert torch.equal(g[0, 0, 0], g[0, 0, 4]) and torch.equal(g[0, 1, :, 0], g[0, 1, :, 8])
    with pytest.raises(ValueError, match="2 channels"):
        dn.get_noise(3, (5, 9), kind="meshgrid")
    with pytest.raises(ValueError, match="kind"):
        dn.get_noise(2, (5, 9), kind="perlin")


# ---------------------------------------------------------------------------------------------------------------
# Downsampler
# ---------------------------------------------------------------------------------------------------------------


def authors_lanczos_1d(factor: int, support: int = 2) -> list[float]:
    """The authors' phase-1/2 Lanczos taps (before normalisation): d = |i + 1/2 - center| / factor."""
    width = 2 * support * factor + 1
    center = (width + 1) / 2
    taps = []
    for i in range(1, width):
        d = abs(i + 0.5 - center) / factor
        taps.append(support * math.sin(math.pi * d) * math.sin(math.pi * d / support) / (math.pi * d) ** 2)
    return taps


@pytest.mark.parametrize("factor", [4, 8], ids=["x4", "x8"])
def test_downsampler_size_and_kernel(factor):
    ds = dn.Downsampler(factor)
    assert ds.kernel.shape == (4 * factor, 4 * factor)
    assert ds.kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    ref = torch.tensor(authors_lanczos_1d(factor), dtype=torch.float64)
    ref2 = torch.outer(ref, ref)
    assert torch.allclose(ds.kernel.double(), ref2 / ref2.sum(), atol=1e-7)
    for h, w in [(64, 64), (8 * factor, 16 * factor), (factor, 3 * factor)]:
        assert ds(torch.rand(2, 3, h, w)).shape == (2, 3, h // factor, w // factor)
    assert ds(torch.rand(3, 64, 64)).shape == (3, 64 // factor, 64 // factor)
    assert dn.Downsampler(factor, phase=0).kernel.shape == (4 * factor + 1,) * 2
    assert dn.Downsampler(factor, "lanczos3").kernel.shape == (6 * factor,) * 2
    no_pad = dn.Downsampler(factor, preserve_size=False)
    assert no_pad(torch.rand(1, 1, 64, 64)).shape[-1] == (64 - 4 * factor) // factor + 1


KERNEL_CASES = [
    ("lanczos2", 0.5, 4),
    ("lanczos2", 0.5, 8),
    ("lanczos2", 0, 4),
    ("lanczos3", 0.5, 2),
    ("box", 0.5, 4),
    ("gauss", 0, 4),
    ("gauss", 0.5, 8),
    ("lanczos2", 0.5, 3),
]


@pytest.mark.parametrize(
    "kernel, phase, factor", KERNEL_CASES, ids=[f"{k}-phase{phase}-x{f}" for k, phase, f in KERNEL_CASES]
)
def test_downsampler_kernels_sum_to_one_and_keep_constants(kernel, phase, factor):
    ds = dn.Downsampler(factor, kernel, phase, sigma=1.5)
    assert ds.kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    x = torch.full((1, 3, 8 * factor, 6 * factor), 0.37)
    out = ds(x)
    assert out.shape == (1, 3, 8, 6)
    assert torch.allclose(out, torch.full_like(out, 0.37), atol=1e-6)


@pytest.mark.parametrize("kernel", ["lanczos2", "lanczos3", "box"])
@pytest.mark.parametrize("factor", [4, 8], ids=["x4", "x8"])
@pytest.mark.parametrize("axis", [-1, -2], ids=["along_w", "along_h"])
def test_downsampler_ramp_phase(kernel, factor, axis):
    """A linear ramp maps to its block averages: the output samples sit at the block centres."""
    n = 12
    size = n * factor
    ramp = 1.0 + torch.arange(size, dtype=torch.float64) / size
    x = (ramp.view(1, 1, 1, size) if axis == -1 else ramp.view(1, 1, size, 1)).expand(1, 2, size, size)
    ds = dn.Downsampler(factor, kernel).double()
    out = ds(x.contiguous())
    block_mean = ramp.view(n, factor).mean(dim=1)
    before = ds.padding[0]
    # output j reads input [j f - before, j f - before + K): away from the replicate padding the ramp is exact
    inner = [j for j in range(n) if j * factor - before >= 0 and j * factor - before + ds.kernel_size <= size]
    assert len(inner) >= 4
    got = out[0, 1, 0, inner] if axis == -1 else out[0, 1, inner, 0]
    assert torch.allclose(got, block_mean[inner], rtol=1e-3, atol=0)
    if kernel == "box":
        assert torch.allclose(out, F.avg_pool2d(x, factor))


def test_downsampler_gradient_and_no_parameters():
    ds = dn.Downsampler(4)
    assert list(ds.parameters()) == []
    assert "kernel" in dict(ds.named_buffers()) and "kernel" in ds.state_dict()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    ds(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the total gradient equals the number of outputs per channel times the kernel sum (1)
    assert x.grad.sum().item() == pytest.approx(3 * 8 * 8, rel=1e-5)
    # the module's kernel follows .double(), and a float64 input works without it too
    assert ds.double().kernel.dtype == torch.float64
    assert dn.Downsampler(2)(torch.rand(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("factor", [2.5, "4", 0, -2, True, None], ids=["2.5", "str_4", "0", "-2", "True", "None"])
def test_downsampler_bad_factor(factor):
    with pytest.raises(ValueError, match="factor"):
        dn.Downsampler(factor)


def test_downsampler_other_errors():
    assert dn.Downsampler(4.0).factor == 4
    with pytest.raises(ValueError, match="phase"):
        dn.Downsampler(4, phase=0.25)
    with pytest.raises(ValueError, match="sigma"):
        dn.Downsampler(4, "gauss")
    with pytest.raises(ValueError, match="phase"):
        dn.Downsampler(4, "box", phase=0)
    with pytest.raises(ValueError, match="kernel"):
        dn.Downsampler(4, "bicubic")
