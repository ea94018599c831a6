"""Feed-forward transform networks of Johnson et al. (ECCV 2016), with model files.

* :class:`TransformNet`: the style transfer network of Johnson et al. with Ulyanov's instance norm and
  Dumoulin et al.'s nearest-neighbour upsampling (their "Style Transfer Network Hyperparameters" table); with
  ``num_styles`` its norms are conditional instance norms, one (gamma, beta) row per style::

      9x9 conv c -> 3x3 conv 2c, stride 2 -> 3x3 conv 4c, stride 2             (conv -> norm -> ReLU each)
      -> residual_blocks x [3x3 conv -> norm -> ReLU -> 3x3 conv -> norm, + identity]   (4c channels)
      -> 2 x [nearest x2 -> crop to the encoder's size -> 3x3 conv -> norm -> ReLU]    (2c, then c)
      -> 9x9 conv 3 -> sigmoid, or (tanh + 1) / 2

  Reflection padding ("SAME" size) for every conv; odd sizes round up on the way down (``ceil(H / 2)``) and the
  upsampled maps are cropped back to the encoder's sizes, so the output has the input's size.

* :class:`SuperResolutionNet`: Johnson et al.'s x4 / x8 super-resolution network (supplementary table)::

      9x9 conv c -> norm -> ReLU                                                   (at low resolution)
      -> residual_blocks x [3x3 conv -> norm -> ReLU -> 3x3 conv -> norm, + identity]
      -> log2(factor) x [3x3 conv, stride 1/2 (ConvTranspose2d(3, 2, padding 1, output_padding 1)) -> norm -> ReLU]
      -> 9x9 conv 3 -> (tanh + 1) / 2

  Norms are batch norm by default, as in Johnson et al. ("all non-residual convolutional layers are followed by
  batch normalization and ReLU"); ``norm="instance"`` swaps in instance norm.

Convs followed by a norm have no bias (the norm's mean subtraction cancels it); the output convs have one.

* :func:`model_config` / :func:`build_model`: a JSON-serialisable ``{"kind": ..., **constructor arguments}``.
* :func:`save_model` / :func:`load_model`: weights (``.safetensors``, or a torch file of the state dict) plus a
  JSON file beside them (same name, suffix ``.json``) holding the config and user metadata.
"""

from __future__ import annotations

import errno
import json
import numbers
import os
import pathlib
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from perceptual_kernels.nn import ConditionalInstanceNorm2d, InstanceNorm2d

from . import _checks
from ._device import resolve_device
from .distributed import sum_over_ranks

__all__ = [
    "OUTPUTS",
    "SR_FACTORS",
    "SR_NORMS",
    "SuperResolutionNet",
    "TransformNet",
    "build_model",
    "load_model",
    "model_config",
    "save_model",
]

#: Output squashing of :class:`TransformNet` (both map to [0, 1]).
OUTPUTS = ("sigmoid", "tanh")
#: Upscaling factors of :class:`SuperResolutionNet`.
SR_FACTORS = (2, 4, 8)
#: Norms of :class:`SuperResolutionNet`.
SR_NORMS = ("batch", "instance")
#: Format tag written into the JSON config files.
FILE_FORMAT = "perceptual_kernels.johnson_nets"
FILE_VERSION = 1

Style = dict[str, torch.Tensor]
NormFactory = Callable[[int, "str | None"], nn.Module]


# --------------------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """A conv with reflection padding of ``kernel_size // 2`` (size ``ceil(H / stride)``, like TF's SAME)."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, padding_mode="reflect", bias=bias
    )


def _normalize(norm: nn.Module, x: torch.Tensor, style: Style) -> torch.Tensor:
    """Apply a norm, passing the style selection to conditional instance norms only."""
    if isinstance(norm, ConditionalInstanceNorm2d):
        return norm(x, **style)
    return norm(x)


class _BatchNormAct(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` followed by an optional ReLU (keeps the state-dict keys flat: ``norm.weight``...).
    With ``synced`` (set by :func:`sync_batch_norms`) a training forward takes its batch statistics over every
    rank's batch, like ``nn.SyncBatchNorm`` (which has no CPU implementation)."""

    def __init__(self, num_features: int, activation: str | None = None) -> None:
        super().__init__(num_features)
        self.activation = activation
        self.synced = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.synced and self.training and dist.is_initialized() and dist.get_world_size() > 1:
            y = self._synced_forward(x)
        else:
            y = super().forward(x)
        return F.relu(y) if self.activation == "relu" else y

    def _synced_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm with the statistics of the ranks' batches together (all of the same size n = B H W):
        mean = sum_ranks sum x / (W n), var = sum_ranks sum (x - mean)^2 / (W n), two differentiable all-reduces
        (their backward sums the gradients over the ranks, as the global batch's loss needs). Statistics in
        fp32; running statistics updated as ``nn.BatchNorm2d`` does (unbiased variance)."""
        xf = x.float()
        count = xf.numel() // xf.shape[1] * dist.get_world_size()
        mean = sum_over_ranks(xf.sum((0, 2, 3))) / count
        centered = xf - mean[None, :, None, None]
        var = sum_over_ranks(centered.square().sum((0, 2, 3))) / count
        tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
        if self.track_running_stats and tracked is not None and running_mean is not None and running_var is not None:
            with torch.no_grad():
                tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                running_mean.lerp_(mean.to(running_mean.dtype), m)
                running_var.lerp_((var * count / max(count - 1, 1)).to(running_var.dtype), m)
        y = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batch_norms(model: nn.Module) -> int:
    """Make the batch norms of ``model`` take their training statistics over all ranks (see
    :class:`_BatchNormAct`); returns how many there are."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNormAct)]
    for m in norms:
        m.synced = True
    return len(norms)


class _ConvNorm(nn.Module):
    """conv -> norm (+ ReLU fused into the norm)."""

    def __init__(self, conv: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: torch.Tensor, style: Style) -> torch.Tensor:
        return _normalize(self.norm, self.conv(x), style)


class _ResidualBlock(nn.Module):
    """``x + norm(conv(relu(norm(conv(x)))))`` with 3x3 reflection-padded convs (He et al. / Johnson et al.)."""

    def __init__(self, channels: int, make_norm: NormFactory) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv(channels, channels, 3), make_norm(channels, "relu")
        self.conv2, self.norm2 = _conv(channels, channels, 3), make_norm(channels, None)

    def forward(self, x: torch.Tensor, style: Style) -> torch.Tensor:
        y = _normalize(self.norm1, self.conv1(x), style)
        return x + _normalize(self.norm2, self.conv2(y), style)


class _UpsampleConvNorm(nn.Module):
    """Dumoulin et al.'s upsampling: nearest x2, crop to ``size``, 3x3 conv, norm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, make_norm: NormFactory) -> None:
        super().__init__()
        self.conv, self.norm = _conv(in_channels, out_channels, 3), make_norm(out_channels, "relu")

    def forward(self, x: torch.Tensor, style: Style, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")[..., : size[0], : size[1]]
        return _normalize(self.norm, self.conv(x), style)


def _check_image(x: object, min_size: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} input must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} input must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{name} input must be at least {min_size}x{min_size} (reflection padding of the 9x9 "
            f"convs), got {x.shape[-2]}x{x.shape[-1]}"
        )
    return x


# --------------------------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------------------------


class TransformNet(nn.Module):
    """Johnson et al.'s style transform network (instance norm, nearest-neighbour upsampling, reflection padding).

    Args:
        num_styles: None for one style (affine ``InstanceNorm2d``); an int S for Dumoulin et al.'s N-style
            network (``ConditionalInstanceNorm2d(S, C)``, one (gamma, beta) row per style).
        channels: width of the first conv; the net uses ``channels``, ``2 * channels``, ``4 * channels``.
        residual_blocks: number of residual blocks at 1/4 resolution.
        output: ``"sigmoid"`` or ``"tanh"`` (``(tanh + 1) / 2``); both give [0, 1].

    ``forward(x, style_index=None, style_weights=None)``: x (B, 3, H, W) in [0, 1], any H, W >= 5; returns
    (B, 3, H, W) in [0, 1]. ``style_index`` (B,) int64 (or a Python int for the whole batch) picks a style per
    sample, ``style_weights`` (B, S) mixes the styles' (gamma, beta) rows; a net with S > 1 needs one of them.
    """

    min_size = 5

    def __init__(
        self, num_styles: int | None = None, channels: int = 32, residual_blocks: int = 5, output: str = "sigmoid"
    ) -> None:
        super().__init__()
        self.num_styles = None if num_styles is None else _positive_int("num_styles", num_styles)
        self.channels = _positive_int("channels", channels)
        self.residual_blocks = _positive_int("residual_blocks", residual_blocks)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
        self.output = output

        def make_norm(features: int, activation: str | None) -> nn.Module:
            if self.num_styles is None:
                return InstanceNorm2d(features, activation=activation)
            return ConditionalInstanceNorm2d(self.num_styles, features, activation=activation)

        c = self.channels
        self.down = nn.ModuleList(
            [
                _ConvNorm(_conv(3, c, 9), make_norm(c, "relu")),
                _ConvNorm(_conv(c, 2 * c, 3, stride=2), make_norm(2 * c, "relu")),
                _ConvNorm(_conv(2 * c, 4 * c, 3, stride=2), make_norm(4 * c, "relu")),
            ]
        )
        self.residual = nn.ModuleList(_ResidualBlock(4 * c, make_norm) for _ in range(self.residual_blocks))
        self.up = nn.ModuleList([_UpsampleConvNorm(4 * c, 2 * c, make_norm), _UpsampleConvNorm(2 * c, c, make_norm)])
        self.out_conv = _conv(c, 3, 9, bias=True)

    def _style(
        self,
        batch: int,
        device: torch.device,
        style_index: torch.Tensor | int | None,
        style_weights: torch.Tensor | None,
    ) -> Style:
        """The keyword arguments passed to every conditional norm (checked once, here)."""
        if self.num_styles is None:
            if style_index is not None or style_weights is not None:
                raise ValueError(
                    "this TransformNet has one style (num_styles=None): style_index / style_weights are not accepted"
                )
            return {}
        if style_index is not None and style_weights is not None:
            raise ValueError("give style_index or style_weights, not both")
        if style_index is None and style_weights is None:
            if self.num_styles > 1:
                raise ValueError(
                    f"this TransformNet has {self.num_styles} styles: give style_index (B,) or "
                    f"style_weights (B, {self.num_styles})"
                )
            return {}
        if isinstance(style_index, numbers.Integral) and not isinstance(style_index, bool):
            style_index = torch.full((batch,), int(style_index), dtype=torch.long, device=device)
        if style_index is not None:
            return {"style_index": style_index}
        return {"style_weights": style_weights}

    def forward(
        self, x: torch.Tensor, style_index: torch.Tensor | int | None = None, style_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Stylise ``x`` (B, 3, H, W) in [0, 1]; returns (B, 3, H, W) in [0, 1]."""
        x = _check_image(x, self.min_size, "TransformNet")
        style = self._style(x.shape[0], x.device, style_index, style_weights)
        h = self.down[0](x, style)
        full_size = tuple(h.shape[-2:])
        h = self.down[1](h, style)
        half_size = tuple(h.shape[-2:])
        h = self.down[2](h, style)
        for block in self.residual:
            h = block(h, style)
        h = self.up[0](h, style, half_size)
        h = self.up[1](h, style, full_size)
        h = self.out_conv(h)
        return torch.sigmoid(h) if self.output == "sigmoid" else (torch.tanh(h) + 1) / 2

    def extra_repr(self) -> str:
        return (
            f"num_styles={self.num_styles}, channels={self.channels}, "
            f"residual_blocks={self.residual_blocks}, output={self.output!r}"
        )


class SuperResolutionNet(nn.Module):
    """Johnson et al.'s super-resolution network (supplementary table, x4 and x8; x2 accepted too).

    Args:
        factor: upscaling factor, 2, 4 or 8 (``log2(factor)`` learned x2 stages).
        channels: width of every hidden layer (64 in the paper).
        residual_blocks: number of residual blocks at low resolution (4 in the paper).
        norm: ``"batch"`` (the paper's batch norm) or ``"instance"``.

    ``forward(x)``: x (B, 3, h, w) in [0, 1], h, w >= 5; returns (B, 3, factor * h, factor * w) in [0, 1].
    """

    min_size = 5

    def __init__(self, factor: int = 4, channels: int = 64, residual_blocks: int = 4, norm: str = "batch") -> None:
        super().__init__()
        if not isinstance(factor, numbers.Integral) or isinstance(factor, bool) or factor not in SR_FACTORS:
            raise ValueError(f"factor must be one of {', '.join(map(str, SR_FACTORS))}; got {factor!r}")
        if norm not in SR_NORMS:
            raise ValueError(f"norm must be one of {', '.join(SR_NORMS)}; got {norm!r}")
        self.factor, self.norm = int(factor), norm
        self.channels = _positive_int("channels", channels)
        self.residual_blocks = _positive_int("residual_blocks", residual_blocks)

        def make_norm(features: int, activation: str | None) -> nn.Module:
            if norm == "batch":
                return _BatchNormAct(features, activation=activation)
            return InstanceNorm2d(features, activation=activation)

        c = self.channels
        self.head = _ConvNorm(_conv(3, c, 9), make_norm(c, "relu"))
        self.residual = nn.ModuleList(_ResidualBlock(c, make_norm) for _ in range(self.residual_blocks))
        self.up = nn.ModuleList(
            _ConvNorm(
                nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1, bias=False), make_norm(c, "relu")
            )
            for _ in range(self.factor.bit_length() - 1)
        )
        self.out_conv = _conv(c, 3, 9, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``x`` (B, 3, h, w) in [0, 1] by ``factor``; output in [0, 1]."""
        x = _check_image(x, self.min_size, "SuperResolutionNet")
        h = self.head(x, {})
        for block in self.residual:
            h = block(h, {})
        for stage in self.up:
            h = stage(h, {})
        return (torch.tanh(self.out_conv(h)) + 1) / 2

    def extra_repr(self) -> str:
        return (
            f"factor={self.factor}, channels={self.channels}, residual_blocks={self.residual_blocks}, "
            f"norm={self.norm!r}"
        )


# --------------------------------------------------------------------------------------------------------------
# configs and files
# --------------------------------------------------------------------------------------------------------------

_KINDS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "transform": (TransformNet, ("num_styles", "channels", "residual_blocks", "output")),
    "super_resolution": (SuperResolutionNet, ("factor", "channels", "residual_blocks", "norm")),
}


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``torch.compile`` wrapper (whose state-dict keys carry an ``_orig_mod.`` prefix)."""
    return getattr(model, "_orig_mod", model)


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"kind": "transform" | "super_resolution", **constructor arguments}`` of a network of this module
    (a ``torch.compile``'d one too)."""
    model = _unwrap(model)
    for kind, (cls, names) in _KINDS.items():
        if isinstance(model, cls):
            return {"kind": kind, **{name: getattr(model, name) for name in names}}
    raise TypeError(f"model_config: expected a TransformNet or SuperResolutionNet, got {type(model).__name__}")


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Build a fresh (randomly initialised) network from a :func:`model_config` dict; ValueError if invalid."""
    if not isinstance(config, Mapping):
        raise ValueError(f"model config must be a dict, got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(_KINDS)}")
    cls, names = _KINDS[kind]
    unknown = sorted(set(config) - set(names) - {"kind"})
    if unknown:
        raise ValueError(f"unknown {kind} config keys: {', '.join(unknown)} (allowed: {', '.join(names)})")
    try:
        return cls(**{name: config[name] for name in names if name in config})
    except TypeError as exc:  # e.g. an unhashable value in a membership test
        raise ValueError(f"bad {kind} config {dict(config)!r}: {exc}") from exc


def _config_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_suffix(".json")


def _atomic_write(path: pathlib.Path, write: Callable[[str], None]) -> None:
    """Call ``write(temp_path)`` on a temp file in ``path``'s folder, then move it onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError as exc:
        raise ModuleNotFoundError(
            "saving or loading .safetensors files needs the safetensors package: pip install safetensors "
            "(or use a .pth path for a torch file)"
        ) from exc
    return safetensors.torch


def save_model(
    model: nn.Module, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None
) -> pathlib.Path:
    """Write ``model``'s weights to ``path`` and its config plus ``metadata`` to ``path`` with suffix ``.json``.

    ``path`` ending in ``.safetensors``: safetensors format (needs the package); anything else: a torch file of the
    state dict (CPU tensors). ``metadata`` must be JSON-serialisable (e.g. style image names). Both files are
    written atomically (temp file + ``os.replace``). Returns the weights path.
    """
    path = pathlib.Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: the weights path must not end in .json (the config is written beside it)")
    config = model_config(model)
    document = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "weights": path.name,
        "config": config,
        "metadata": dict(metadata) if metadata is not None else {},
    }
    try:
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from exc
    state = {key: value.detach().to("cpu").contiguous() for key, value in _unwrap(model).state_dict().items()}

    if path.suffix == ".safetensors":
        st = _safetensors_torch()
        header = {"format": FILE_FORMAT, "config": json.dumps(config, sort_keys=True)}
        _atomic_write(path, lambda tmp: st.save_file(state, tmp, metadata=header))
    else:
        _atomic_write(path, lambda tmp: torch.save(state, tmp))

    def write_config(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(_config_path(path), write_config)
    return path


def _missing(what: str, path: pathlib.Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"{what} not found: {path}", str(path))


def _read_weights(path: pathlib.Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` on the CPU (never running code: safetensors or ``weights_only=True``)."""
    if path.suffix == ".safetensors":
        st = _safetensors_torch()
        try:
            state = st.load_file(str(path), device="cpu")
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path} is not a valid model weights file: {reason}") from exc
    else:
        state = _checks.load_torch_file(path, "model weights file")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{path} is not a valid model weights file: expected a state dict (str -> Tensor), "
            f"got {type(state).__name__}"
        )
    return state


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: pathlib.Path) -> None:
    """ValueError naming the first key whose presence or shape differs from ``model``'s state dict."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise ValueError(
                f"{path}: weights do not fit the config: missing key {key!r} (expected shape {tuple(value.shape)})"
            )
        if state[key].shape != value.shape:
            raise ValueError(
                f"{path}: weights do not fit the config: {key!r} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(value.shape)}"
            )
    for key in state:
        if key not in expected:
            raise ValueError(
                f"{path}: weights do not fit the config: unexpected key {key!r} (shape {tuple(state[key].shape)})"
            )


def load_model(path: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network saved by :func:`save_model`; returns ``(model in eval mode, metadata)``.

    ``path`` is the weights file (its ``.json`` config beside it); passing the ``.json`` path works too.
    Torch files are read with ``torch.load(..., weights_only=True)``, safetensors with
    ``safetensors.torch.load_file``. Raises FileNotFoundError naming a missing file, ValueError for a bad config
    or weights that do not fit it (naming the first mismatching key and shapes).
    """
    path = pathlib.Path(path)
    config_path = path if path.suffix == ".json" else _config_path(path)
    if not config_path.is_file():
        raise _missing("model config", config_path)
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_path}: not a valid JSON model config: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ValueError(f"{config_path}: expected a JSON object with a 'config' object")
    if path.suffix == ".json":
        if not isinstance(document.get("weights"), str):
            raise ValueError(f"{config_path}: no 'weights' file name in the config")
        path = config_path.parent / document["weights"]
    if not path.is_file():
        raise _missing("model weights", path)
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{config_path}: 'metadata' must be a JSON object, got {type(metadata).__name__}")

    state = _read_weights(path)
    blocks = document["config"].get("residual_blocks")
    if isinstance(blocks, int) and blocks > len(state):  # each block holds several tensors
        raise ValueError(f"{config_path}: residual_blocks={blocks} does not fit the {len(state)} tensors in {path}")
    try:
        with torch.device("meta"):  # the config's shapes, checked against the weights before any allocation
            skeleton = build_model(document["config"])
    except RuntimeError as exc:  # e.g. sizes that overflow
        raise ValueError(f"{config_path}: the config does not describe a network that fits {path}: {exc}") from None
    _check_state(skeleton, state, path)
    model = build_model(document["config"])
    model.load_state_dict(state)
    if isinstance(map_location, (str, torch.device)):
        model.to(resolve_device(map_location))
    return model.eval(), metadata
