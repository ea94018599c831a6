"""Deep Image Prior networks, input codes and the super-resolution downsampler.

Deep Image Prior (Ulyanov, Vedaldi and Lempitsky, CVPR 2018) fits a randomly initialised conv net
``f_theta(z)`` with a fixed random code ``z`` to one corrupted image; the architecture itself is the prior.
This module builds the networks of the authors' code (written from its description, not copied):

* :func:`skip`: the encoder-decoder with skip connections used for denoising, super-resolution and inpainting.
  Scale ``i`` (``i = 0`` is the full resolution) maps its input ``x`` to::

      skip branch   s = act(BN(conv_{k_skip}(x)))                       (only if channels_skip[i] > 0)
      deeper branch d = up_x2(next_scale(act(BN(conv_{k_down}(act(BN(conv_{k_down}^{stride 2}(x))))))))
      output          act(BN(conv_1x1(act(BN(conv_{k_up}(BN(concat(s, d))))))))

  and the net ends with ``conv_1x1 -> out_channels`` and a sigmoid. The deepest scale has no ``next_scale``.
* :func:`hourglass`: the same encoder-decoder without skip branches (``skip`` with ``channels_skip`` all 0).
* :func:`unet`: a plain U-Net (two 3x3 convs per level, max-pool or stride-2 down, upsample + conv up,
  concatenation skips).
* :func:`get_net` (by name) and :func:`task_defaults` (the authors' per-task settings).
* :func:`get_noise`: the fixed input ``z`` (uniform noise times 1/10, or a 2-channel meshgrid).
* :class:`Downsampler`: the fixed antialiased (Lanczos / box / Gaussian) downsampler ``d(.)`` of the
  super-resolution data term ``||d(f(z)) - x_LR||^2``.

Input sizes: a net with ``S`` scales halves the resolution ``S`` times, so H and W must be multiples of
``net.multiple`` (``2**S``; see :func:`required_multiple`). With reflection padding every padded conv must also
see a map larger than its padding, so H, W must be at least ``net.min_size`` (``2 * 2**S`` for 3x3 kernels:
64 for the 5-scale nets). Both are checked in ``forward`` with a ValueError.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "DOWNSAMPLE_MODES",
    "KERNELS",
    "NETS",
    "PADS",
    "TASKS",
    "UPSAMPLE_MODES",
    "Downsampler",
    "SkipNet",
    "UNet",
    "get_net",
    "get_noise",
    "hourglass",
    "required_multiple",
    "skip",
    "task_defaults",
    "unet",
]

#: Padding modes of every conv.
PADS = ("reflection", "zero")
#: Upsampling modes of the decoders.
UPSAMPLE_MODES = ("bilinear", "nearest")
#: How :func:`skip` halves the resolution: a stride-2 conv, or a stride-1 conv followed by a pooling /
#: antialiased (:class:`Downsampler`) step.
DOWNSAMPLE_MODES = ("stride", "avg", "max", "lanczos2", "lanczos3")
#: Activation names (a callable returning an ``nn.Module`` is accepted too).
ACTIVATIONS = ("leaky_relu", "relu", "elu", "swish", "none")
#: Names accepted by :func:`get_net`.
NETS = ("skip", "unet", "hourglass")
#: Tasks of :func:`task_defaults`.
TASKS = ("denoising", "super_resolution", "inpainting")
#: Kernels of :class:`Downsampler`.
KERNELS = ("lanczos2", "lanczos3", "box", "gauss")

Activation = str | Callable[[], nn.Module]


# --------------------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------------------


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value.lower()


def _positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _odd_kernel(name: str, value: object) -> int:
    k = _positive_int(name, value)
    if k % 2 == 0:
        raise ValueError(f"{name} must be odd so that a conv keeps the size of its input, got {k}")
    return k


def _channels(name: str, value: Sequence[int], *, allow_zero: bool = False) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {value!r}")
    return tuple(_positive_int(f"{name}[{i}]", c, allow_zero=allow_zero) for i, c in enumerate(value))


def _activation(act: Activation) -> nn.Module:
    """A fresh activation module: LeakyReLU(0.2) (the authors'), ReLU, ELU, Swish (SiLU) or identity."""
    if callable(act) and not isinstance(act, str):
        return act()
    act = _choice("act", act, ACTIVATIONS)
    if act == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if act == "relu":
        return nn.ReLU()
    if act == "elu":
        return nn.ELU()
    if act == "swish":
        return nn.SiLU()
    return nn.Identity()


def _norm(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


def _conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    stride: int = 1,
    bias: bool = True,
    pad: str = "reflection",
    downsample: str = "stride",
) -> nn.Sequential:
    """``[ReflectionPad] -> Conv2d [-> pooling / Downsampler]``, keeping the size (divided by ``stride``).

    With ``stride > 1`` and ``downsample != "stride"`` the conv runs at stride 1 and the pooling or antialiased
    downsampler that follows it does the striding (as in the authors' ``conv``).
    """
    to_pad = (kernel - 1) // 2
    layers: list[nn.Module] = []
    if pad == "reflection" and to_pad > 0:
        layers.append(nn.ReflectionPad2d(to_pad))
    conv_stride = stride if downsample == "stride" else 1
    layers.append(
        nn.Conv2d(in_ch, out_ch, kernel, stride=conv_stride, padding=to_pad if pad == "zero" else 0, bias=bias)
    )
    if stride > 1 and downsample != "stride":
        if downsample == "avg":
            layers.append(nn.AvgPool2d(stride, stride))
        elif downsample == "max":
            layers.append(nn.MaxPool2d(stride, stride))
        else:
            layers.append(Downsampler(stride, kernel=downsample, phase=0.5, preserve_size=True))
    return nn.Sequential(*layers)


def _conv_block(in_ch: int, out_ch: int, kernel: int, *, bn: bool, act: Activation, **conv_kwargs) -> list[nn.Module]:
    """``conv -> BN -> act`` as a list of layers."""
    return [_conv(in_ch, out_ch, kernel, **conv_kwargs), _norm(out_ch, bn), _activation(act)]


def _upsample(mode: str) -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode=mode, align_corners=False if mode == "bilinear" else None)


def _concat_cropped(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate along channels after centre-cropping every map to the smallest H and W among them."""
    h = min(t.shape[-2] for t in tensors)
    w = min(t.shape[-1] for t in tensors)
    cropped = []
    for t in tensors:
        top, left = (t.shape[-2] - h) // 2, (t.shape[-1] - w) // 2
        cropped.append(t[..., top : top + h, left : left + w])
    return torch.cat(cropped, dim=1)


def _check_input(net: nn.Module, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{type(net).__name__} expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % net.multiple or w % net.multiple:
        raise ValueError(
            f"{type(net).__name__}: H and W must be multiples of {net.multiple} (2**scales), got "
            f"{h}x{w}; crop or pad the image (and the code z) to a multiple first"
        )
    if min(h, w) < net.min_size:
        raise ValueError(
            f"{type(net).__name__}: H and W must be at least {net.min_size} with {net.pad} padding "
            f"(the deepest maps must be larger than the conv padding), got {h}x{w}"
        )


def required_multiple(net: nn.Module) -> int:
    """The number H and W of the input of a net from this module must be divisible by (``net.multiple``)."""
    multiple = getattr(net, "multiple", None)
    if not isinstance(multiple, int):
        raise TypeError(f"{type(net).__name__} does not declare a required input multiple (no int .multiple)")
    return multiple


# --------------------------------------------------------------------------------------------------------------
# skip / hourglass
# --------------------------------------------------------------------------------------------------------------


class _SkipScale(nn.Module):
    """One scale of :class:`SkipNet`: optional skip branch, deeper branch (down, next scale, up x2), merge."""

    def __init__(
        self,
        in_ch: int,
        down_ch: int,
        up_ch: int,
        skip_ch: int,
        inner: nn.Module | None,
        inner_out_ch: int,
        *,
        kernel_down: int,
        kernel_up: int,
        kernel_skip: int,
        upsample: str,
        downsample: str,
        pad: str,
        act: Activation,
        need_bias: bool,
        bn: bool,
        need1x1_up: bool,
    ):
        super().__init__()
        conv = {"bias": need_bias, "pad": pad}
        self.skip = (
            nn.Sequential(*_conv_block(in_ch, skip_ch, kernel_skip, bn=bn, act=act, **conv)) if skip_ch > 0 else None
        )
        self.down = nn.Sequential(
            *_conv_block(in_ch, down_ch, kernel_down, bn=bn, act=act, stride=2, downsample=downsample, **conv),
            *_conv_block(down_ch, down_ch, kernel_down, bn=bn, act=act, **conv),
        )
        self.inner = inner if inner is not None else nn.Identity()
        self.up = _upsample(upsample)
        merged = skip_ch + inner_out_ch
        layers = [_norm(merged, bn), *_conv_block(merged, up_ch, kernel_up, bn=bn, act=act, **conv)]
        if need1x1_up:
            layers += _conv_block(up_ch, up_ch, 1, bn=bn, act=act, **conv)
        self.merge = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deeper = self.up(self.inner(self.down(x)))
        if self.skip is not None:
            deeper = _concat_cropped(self.skip(x), deeper)
        return self.merge(deeper)


class SkipNet(nn.Module):
    """The DIP encoder-decoder (see :func:`skip`). ``multiple``: H, W divisor; ``min_size``: smallest H, W."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels_down: Sequence[int],
        channels_up: Sequence[int],
        channels_skip: Sequence[int],
        *,
        kernel_down: int,
        kernel_up: int,
        kernel_skip: int,
        upsample: str,
        downsample: str,
        pad: str,
        act: Activation,
        need_sigmoid: bool,
        need_bias: bool,
        bn: bool,
        need1x1_up: bool,
    ):
        super().__init__()
        down = _channels("channels_down", channels_down)
        up = _channels("channels_up", channels_up)
        skips = _channels("channels_skip", channels_skip, allow_zero=True)
        if not len(down) == len(up) == len(skips):
            raise ValueError(
                "channels_down, channels_up and channels_skip must have the same length (one entry "
                f"per scale), got {len(down)}, {len(up)} and {len(skips)}"
            )
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = _positive_int("out_channels", out_channels)
        kernel_down, kernel_up = _odd_kernel("kernel_down", kernel_down), _odd_kernel("kernel_up", kernel_up)
        kernel_skip = _odd_kernel("kernel_skip", kernel_skip)
        upsample = _choice("upsample", upsample, UPSAMPLE_MODES)
        downsample = _choice("downsample", downsample, DOWNSAMPLE_MODES)
        pad = _choice("pad", pad, PADS)
        _activation(act)  # validate the name now rather than in the middle of the build

        self.in_channels, self.out_channels, self.pad = in_channels, out_channels, pad
        self.scales = len(down)
        self.multiple = 2**self.scales
        self.min_size = self.multiple * self._deepest_min(pad, kernel_down, kernel_up, kernel_skip)

        # Build from the deepest scale outwards; scale i's input has channels_down[i - 1] (in_channels at i = 0).
        inner: nn.Module | None = None
        inner_out = down[-1]
        for i in reversed(range(self.scales)):
            in_ch = in_channels if i == 0 else down[i - 1]
            inner = _SkipScale(
                in_ch,
                down[i],
                up[i],
                skips[i],
                inner,
                inner_out,
                kernel_down=kernel_down,
                kernel_up=kernel_up,
                kernel_skip=kernel_skip,
                upsample=upsample,
                downsample=downsample,
                pad=pad,
                act=act,
                need_bias=need_bias,
                bn=bn,
                need1x1_up=need1x1_up,
            )
            inner_out = up[i]
        self.body = inner
        self.head = nn.Sequential(
            _conv(up[0], out_channels, 1, bias=need_bias, pad=pad), nn.Sigmoid() if need_sigmoid else nn.Identity()
        )

    @staticmethod
    def _deepest_min(pad: str, kernel_down: int, kernel_up: int, kernel_skip: int) -> int:
        """Smallest size of the deepest map (H / 2**scales) for which every reflection pad is valid.

        The deepest map only meets the second ``kernel_down`` conv; the maps one scale up (twice as large) meet
        the strided conv, the skip conv and the ``kernel_up`` conv.
        """
        if pad != "reflection":
            return 1
        pd, pu, ps = (kernel_down - 1) // 2, (kernel_up - 1) // 2, (kernel_skip - 1) // 2
        return max(pd + 1, math.ceil((max(pd, pu, ps) + 1) / 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(self, z)
        return self.head(self.body(z))


def skip(
    in_channels: int = 32,
    out_channels: int = 3,
    channels_down: Sequence[int] = (128,) * 5,
    channels_up: Sequence[int] = (128,) * 5,
    channels_skip: Sequence[int] = (4,) * 5,
    kernel_down: int = 3,
    kernel_up: int = 3,
    kernel_skip: int = 1,
    upsample: str = "bilinear",
    downsample: str = "stride",
    pad: str = "reflection",
    act: Activation = "leaky_relu",
    need_sigmoid: bool = True,
    need_bias: bool = True,
    bn: bool = True,
    need1x1_up: bool = True,
) -> SkipNet:
    """The DIP encoder-decoder with skip connections (the authors' ``skip``), ``len(channels_down)`` scales.

    Per scale ``i``: skip branch ``conv_{kernel_skip} -> BN -> act`` (when ``channels_skip[i] > 0``); deeper
    branch ``conv_{kernel_down}/2 -> BN -> act -> conv_{kernel_down} -> BN -> act -> [scale i+1] -> up x2``;
    then ``concat -> BN -> conv_{kernel_up} -> BN -> act [-> conv_1x1 -> BN -> act]`` (``need1x1_up``).
    Output: ``conv_1x1 -> out_channels [-> sigmoid]``. ``act="leaky_relu"`` is LeakyReLU(0.2).

    H and W of the input must be multiples of ``2**scales`` (``net.multiple``) and, with reflection padding, at
    least ``net.min_size``. The defaults are the authors' denoising / super-resolution net (~2.2M parameters).
    """
    return SkipNet(
        in_channels,
        out_channels,
        channels_down,
        channels_up,
        channels_skip,
        kernel_down=kernel_down,
        kernel_up=kernel_up,
        kernel_skip=kernel_skip,
        upsample=upsample,
        downsample=downsample,
        pad=pad,
        act=act,
        need_sigmoid=need_sigmoid,
        need_bias=need_bias,
        bn=bn,
        need1x1_up=need1x1_up,
    )


def hourglass(
    in_channels: int,
    out_channels: int = 3,
    channels: Sequence[int] = (128,) * 5,
    upsample: str = "bilinear",
    downsample: str = "stride",
    kernel_down: int = 3,
    kernel_up: int = 3,
    pad: str = "reflection",
    act: Activation = "leaky_relu",
    need_sigmoid: bool = True,
    need_bias: bool = True,
    bn: bool = True,
    need1x1_up: bool = True,
) -> SkipNet:
    """The encoder-decoder of :func:`skip` without skip branches: ``skip(channels_skip=(0,) * len(channels))``."""
    channels = _channels("channels", channels)
    return skip(
        in_channels,
        out_channels,
        channels,
        channels,
        (0,) * len(channels),
        kernel_down=kernel_down,
        kernel_up=kernel_up,
        upsample=upsample,
        downsample=downsample,
        pad=pad,
        act=act,
        need_sigmoid=need_sigmoid,
        need_bias=need_bias,
        bn=bn,
        need1x1_up=need1x1_up,
    )


# --------------------------------------------------------------------------------------------------------------
# U-Net
# --------------------------------------------------------------------------------------------------------------


class UNet(nn.Module):
    """A plain U-Net with ``len(channels)`` levels (level 0 at full resolution).

    Encoder level 0: ``(conv3 -> BN -> act) x 2``; level ``i > 0``: ``maxpool2 -> (conv3 -> BN -> act) x 2``
    (``downsample="max"``) or ``conv3/2 -> BN -> act -> conv3 -> BN -> act`` (``"stride"``). Decoder level ``i``:
    ``up x2 -> conv3 -> BN -> act`` to ``channels[i]``, concatenated with encoder level ``i``, then
    ``(conv3 -> BN -> act) x 2``. Head: ``conv1x1 -> out_channels [-> sigmoid]``. H, W: multiples of
    ``multiple = 2**(len(channels) - 1)``, at least ``min_size``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 3,
        channels: Sequence[int] = (32, 64, 128, 256),
        upsample: str = "bilinear",
        downsample: str = "max",
        pad: str = "reflection",
        act: Activation = "leaky_relu",
        need_sigmoid: bool = True,
        need_bias: bool = True,
        bn: bool = True,
    ):
        super().__init__()
        ch = _channels("channels", channels)
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = _positive_int("out_channels", out_channels)
        upsample = _choice("upsample", upsample, UPSAMPLE_MODES)
        downsample = _choice("downsample", downsample, ("max", "stride"))
        pad = _choice("pad", pad, PADS)
        _activation(act)
        conv = {"bias": need_bias, "pad": pad, "bn": bn, "act": act}

        self.in_channels, self.out_channels, self.pad = in_channels, out_channels, pad
        self.levels = len(ch)
        self.multiple = 2 ** (self.levels - 1)
        self.min_size = self.multiple * (2 if pad == "reflection" else 1)

        encoders = [nn.Sequential(*_conv_block(in_channels, ch[0], 3, **conv), *_conv_block(ch[0], ch[0], 3, **conv))]
        for i in range(1, self.levels):
            if downsample == "max":
                first = [nn.MaxPool2d(2), *_conv_block(ch[i - 1], ch[i], 3, **conv)]
            else:
                first = _conv_block(ch[i - 1], ch[i], 3, stride=2, **conv)
            encoders.append(nn.Sequential(*first, *_conv_block(ch[i], ch[i], 3, **conv)))
        self.encoders = nn.ModuleList(encoders)
        # ups[i] / fuses[i] bring level i + 1 back to level i.
        self.ups = nn.ModuleList(
            nn.Sequential(_upsample(upsample), *_conv_block(ch[i + 1], ch[i], 3, **conv))
            for i in range(self.levels - 1)
        )
        self.fuses = nn.ModuleList(
            nn.Sequential(*_conv_block(2 * ch[i], ch[i], 3, **conv), *_conv_block(ch[i], ch[i], 3, **conv))
            for i in range(self.levels - 1)
        )
        self.head = nn.Sequential(
            _conv(ch[0], out_channels, 1, bias=need_bias, pad=pad), nn.Sigmoid() if need_sigmoid else nn.Identity()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(self, z)
        features = []
        x = z
        for encoder in self.encoders:
            x = encoder(x)
            features.append(x)
        for i in reversed(range(self.levels - 1)):
            x = self.fuses[i](_concat_cropped(self.ups[i](x), features[i]))
        return self.head(x)


def unet(
    in_channels: int,
    out_channels: int = 3,
    channels: Sequence[int] = (32, 64, 128, 256),
    upsample: str = "bilinear",
    pad: str = "reflection",
    need_sigmoid: bool = True,
    bn: bool = True,
    downsample: str = "max",
    act: Activation = "leaky_relu",
    need_bias: bool = True,
) -> UNet:
    """A plain U-Net (see :class:`UNet`); ``downsample`` is ``"max"`` (max-pool) or ``"stride"`` (stride-2 conv)."""
    return UNet(
        in_channels,
        out_channels,
        channels,
        upsample=upsample,
        downsample=downsample,
        pad=pad,
        act=act,
        need_sigmoid=need_sigmoid,
        need_bias=need_bias,
        bn=bn,
    )


# --------------------------------------------------------------------------------------------------------------
# by name, per-task settings
# --------------------------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[..., nn.Module]] = {"skip": skip, "unet": unet, "hourglass": hourglass}


def get_net(name: str, in_channels: int, out_channels: int = 3, **kwargs) -> nn.Module:
    """Build ``name`` (one of :data:`NETS`, case-insensitive) with the keyword arguments of its builder."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _BUILDERS:
        raise ValueError(f"unknown net {name!r}; expected one of {', '.join(NETS)}")
    return _BUILDERS[key](in_channels, out_channels, **kwargs)


_TASK_ALIASES = {
    "denoising": "denoising",
    "denoise": "denoising",
    "super_resolution": "super_resolution",
    "superresolution": "super_resolution",
    "sr": "super_resolution",
    "sr4": "super_resolution",
    "sr8": "super_resolution",
    "inpainting": "inpainting",
    "inpaint": "inpainting",
}


def task_defaults(task: str) -> dict:
    """The authors' network settings for ``task``: a fresh flat dict of :func:`skip` keyword arguments plus
    ``"input_depth"`` (the channels of ``z``).

    Tasks (case-insensitive, ``-`` or ``_``): ``denoising`` / ``denoise``, ``super_resolution`` / ``sr`` /
    ``sr4`` / ``sr8``, ``inpainting`` / ``inpaint``. Use as::

        cfg = task_defaults("denoising"); depth = cfg.pop("input_depth")
        net = get_net("skip", depth, 3, **cfg); z = get_noise(depth, (H, W))

    Values (the authors' notebooks): denoising and super-resolution: 5 scales of 128 down / 128 up channels,
    4 skip channels, bilinear upsampling; inpainting (the text-inpainting figure): 5 scales of 128 / 128 with
    128 skip channels, nearest upsampling. All: 32 input channels of U[0, 1) / 10, 3x3 down / up convs, 1x1
    skip convs, stride-2 downsampling, reflection padding, LeakyReLU(0.2), BN, sigmoid output. Not in the dict
    (the optimisation loop's business), for reference: Adam, lr 0.01; denoising 3000 iterations,
    reg_noise_std 1/30, output averaged with weight 0.99; super-resolution Lanczos-2 downsampler with phase 1/2,
    x4: 2000 iterations, reg_noise_std 0.03, x8: 4000 and 0.05; inpainting 6000 iterations, reg_noise_std 0.03.
    """
    key = _TASK_ALIASES.get(task.lower().replace("-", "_").replace(" ", "_")) if isinstance(task, str) else None
    if key is None:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    cfg = {
        "input_depth": 32,
        "channels_down": (128,) * 5,
        "channels_up": (128,) * 5,
        "channels_skip": (4,) * 5,
        "kernel_down": 3,
        "kernel_up": 3,
        "kernel_skip": 1,
        "upsample": "bilinear",
        "downsample": "stride",
        "pad": "reflection",
        "act": "leaky_relu",
        "need_sigmoid": True,
        "need_bias": True,
        "bn": True,
    }
    if key == "inpainting":
        cfg.update(channels_skip=(128,) * 5, upsample="nearest")
    return cfg


# --------------------------------------------------------------------------------------------------------------
# input code z
# --------------------------------------------------------------------------------------------------------------


def get_noise(
    channels: int,
    size: int | tuple[int, int],
    kind: str = "noise",
    scale: float = 0.1,
    generator: torch.Generator | None = None,
    *,
    distribution: str = "uniform",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The fixed DIP input ``z`` of shape (1, channels, H, W).

    ``kind="noise"``: ``U[0, 1) * scale`` (the authors' ``var = 1/10``), or ``N(0, 1) * scale`` with
    ``distribution="normal"``, drawn from ``generator`` (on its device) when given. ``kind="meshgrid"``:
    ``channels`` must be 2; channel 0 is x (along W) and channel 1 is y (along H), both from 0 to 1 inclusive
    (``scale`` is not applied).
    """
    channels = _positive_int("channels", channels)
    h, w = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    h, w = _positive_int("size[0]", h), _positive_int("size[1]", w)
    kind = _choice("kind", kind, ("noise", "meshgrid"))
    if kind == "meshgrid":
        if channels != 2:
            raise ValueError(f"a meshgrid code has 2 channels (x, y), got channels={channels}")
        ys = torch.linspace(0.0, 1.0, h, dtype=dtype, device=device)
        xs = torch.linspace(0.0, 1.0, w, dtype=dtype, device=device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([grid_x, grid_y]).unsqueeze(0)
    distribution = _choice("distribution", distribution, ("uniform", "normal"))
    sample = torch.rand if distribution == "uniform" else torch.randn
    gen_device = generator.device if generator is not None else device
    z = sample((1, channels, h, w), generator=generator, device=gen_device, dtype=dtype)
    return (z * scale).to(device) if device is not None else z * scale


# --------------------------------------------------------------------------------------------------------------
# antialiased downsampler
# --------------------------------------------------------------------------------------------------------------


def _lanczos(x: torch.Tensor, support: int) -> torch.Tensor:
    """``sinc(x) * sinc(x / support)`` (normalised sinc), 1 at 0."""
    return torch.sinc(x) * torch.sinc(x / support)


def _kernel_1d(kernel: str, factor: int, phase: float, sigma: float | None) -> torch.Tensor:
    """The 1-D taps (float64, summing to 1); phase 0 -> odd length, integer offsets; 0.5 -> even, half-integer."""
    if kernel == "box":
        if phase != 0.5:
            raise ValueError("the box kernel averages whole factor x factor blocks: phase must be 0.5")
        return torch.full((factor,), 1.0 / factor, dtype=torch.float64)
    if kernel in ("lanczos2", "lanczos3"):
        support = int(kernel[-1])
        size = 2 * support * factor + (1 if phase == 0 else 0)
    else:  # gauss
        if sigma is None or not sigma > 0:
            raise ValueError(f"the gauss kernel needs sigma > 0 (in high-resolution pixels), got {sigma!r}")
        size = 2 * math.ceil(3 * sigma + phase) + (1 if phase == 0 else 0)
        if size < factor:  # at least one block wide, keeping the parity that the phase dictates
            size = factor + ((factor + size) % 2)
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    if kernel == "gauss":
        taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    else:
        taps = _lanczos(offsets / factor, support)
    return taps / taps.sum()


class Downsampler(nn.Module):
    """The fixed antialiased downsampler ``d(.)`` of DIP super-resolution (no learnable parameters).

    A separable 2-D kernel (buffer ``kernel``, sums to 1) applied per channel as a depthwise conv with stride
    ``factor``. Kernels: ``"lanczos2"`` / ``"lanczos3"`` (Lanczos window of support 2 / 3 in low-resolution
    pixels: ``4 * factor + 1`` taps, or ``4 * factor`` with ``phase=0.5``, as in the authors' code), ``"box"``
    (``factor x factor`` block average) and ``"gauss"`` (``sigma`` in high-resolution pixels, about 3 sigma each
    side). ``phase=0.5`` puts the taps at half-pixel offsets, so that for even factors every output sample sits
    at the centre of its ``factor x factor`` block (exact block alignment). ``phase=0`` uses integer offsets.

    With ``preserve_size`` the input is replicate-padded by ``kernel_size - factor`` pixels in all (split as
    evenly as possible, the extra pixel on the right/bottom) and the output is ``(H // factor, W // factor)``;
    without it no padding is done (``floor((H - kernel_size) / factor) + 1``).

    Deviation: for ``phase=0`` the authors pad ``2 * factor`` on both sides (sample at the block's top-left
    pixel); here the padding centres the kernel on the block as well as the parity allows.
    """

    def __init__(
        self,
        factor: int,
        kernel: str = "lanczos2",
        phase: float = 0.5,
        preserve_size: bool = True,
        *,
        sigma: float | None = None,
    ):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or factor != int(factor) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        if phase not in (0, 0.5):
            raise ValueError(f"phase must be 0 or 0.5, got {phase!r}")
        self.factor = int(factor)
        self.kernel_type = _choice("kernel", kernel, KERNELS)
        self.phase = float(phase)
        self.preserve_size = bool(preserve_size)
        taps = _kernel_1d(self.kernel_type, self.factor, self.phase, sigma)
        kernel_2d = torch.outer(taps, taps)
        self.register_buffer("kernel", (kernel_2d / kernel_2d.sum()).to(torch.float32))
        total = taps.numel() - self.factor
        self.padding = (total // 2, total - total // 2)  # (before, after) on each spatial axis

    @property
    def kernel_size(self) -> int:
        return self.kernel.shape[-1]

    def extra_repr(self) -> str:
        return (
            f"factor={self.factor}, kernel={self.kernel_type!r}, phase={self.phase}, "
            f"kernel_size={self.kernel_size}, preserve_size={self.preserve_size}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample a (B, C, H, W) or (C, H, W) tensor."""
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"Downsampler expects (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
        if self.preserve_size:
            before, after = self.padding
            x = F.pad(x, (before, after, before, after), mode="replicate")
        elif min(x.shape[-2:]) < self.kernel_size:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is smaller than the {self.kernel_size}-tap kernel; use preserve_size=True"
            )
        channels = x.shape[1]
        weight = self.kernel.to(device=x.device, dtype=x.dtype).expand(channels, 1, -1, -1)
        out = F.conv2d(x, weight, stride=self.factor, groups=channels)
        return out.squeeze(0) if squeeze else out
