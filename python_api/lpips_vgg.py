"""LPIPS, the VGG variant (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), on the fused layer distance :func:`perceptual_kernels.lpips_distance`.

For images ``x``, ``y`` in [-1, 1] (the ``lpips`` package's convention; ``normalize=True`` takes [0, 1]):

1. the package's scaling layer: ``z = (x - shift) / scale``, shift = (-0.030, -0.088, -0.188), scale = (0.458,
   0.448, 0.450) per RGB channel;
2. VGG16 features relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of ``z`` (:class:`VGGFeatures` with
   ``normalize_input=False``: the scaling layer replaces its ImageNet normalisation);
3. per layer ``d_l = mean_hw sum_c w_lc (f0_c / (||f0|| + 1e-10) - f1_c / (||f1|| + 1e-10))^2`` (the fused op;
   ``w_l`` the published 1x1 linear weights, frozen), and ``LPIPS = sum_l d_l`` per image -> (B,).

The linear weights are the ``lpips`` package's own file ``lpips/weights/v0.1/vgg.pth`` (found without importing
the package), or a file given as ``lin_weights`` (the same ``lin{k}.model.1.weight`` keys), loaded with
``weights_only=True``.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import nn

import perceptual_kernels as pk

from .vgg import VGGFeatures

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # the lpips package's ScalingLayer
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10  # lpips.normalize_tensor
PACKAGE_WEIGHTS = os.path.join("weights", "v0.1", "vgg.pth")


def package_weights_path() -> str | None:
    """The ``lpips`` package's VGG linear-layer file, or None when the package is not installed (the package is
    located, not imported: importing it needs a working torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], PACKAGE_WEIGHTS)


def load_linear_weights(path: str | os.PathLike | None = None) -> list[torch.Tensor]:
    """The five (C_l,) float32 linear weights of LPIPS-VGG from ``path``, or from the ``lpips`` package's file.

    Raises FileNotFoundError naming what is missing (the package, or the file) and ValueError for a file without
    the expected ``lin{k}.model.1.weight`` tensors of shape (1, C_l, 1, 1).
    """
    if path is None:
        path = package_weights_path()
        if path is None:
            raise FileNotFoundError(
                "LPIPS needs the published linear-layer weights: the lpips package is not installed "
                "(pip install lpips), and no lin_weights path to its weights/v0.1/vgg.pth file was given"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the lpips package is installed but its weight file {path} is missing")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lin_weights={path!r} is not a file (expected the lpips package's vgg.pth)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict of lin0..lin4 weights")
    weights = []
    for k, channels in enumerate(LPIPS_CHANNELS):
        key = f"lin{k}.model.1.weight"
        w = state.get(key)
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (1, channels, 1, 1):
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else "missing"
            raise ValueError(f"{path}: {key!r} must be a (1, {channels}, 1, 1) tensor, got {got}")
        weights.append(w.detach().float().reshape(channels))
    return weights


class LPIPS(nn.Module):
    """LPIPS-VGG (see the module docstring): ``forward(x, y)`` -> (B,) float32 distances.

    Args:
        vgg_weights: the VGG16 backbone, as :class:`VGGFeatures` takes it ("imagenet", a path, "random").
        lin_weights: path of the linear-layer file; None: the installed ``lpips`` package's ``vgg.pth``.

    Everything is frozen (buffers, no parameters); gradients flow to the images, so it also serves as a loss.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, vgg_weights: str | os.PathLike = "imagenet", lin_weights: str | os.PathLike | None = None):
        super().__init__()
        lins = load_linear_weights(lin_weights)  # first: the clearer error when the package is missing
        self.vgg = VGGFeatures(list(LPIPS_LAYERS), arch="vgg16", weights=vgg_weights, normalize_input=False)
        for k, w in enumerate(lins):
            self.register_buffer(f"lin{k}", w)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stays in eval mode (nothing in LPIPS-VGG behaves differently in training)."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five VGG16 layers of images ``x`` in [-1, 1] after the scaling layer."""
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        h = (x.to(self.shift.dtype) - self.shift) / self.scale
        if channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        return list(self.vgg(h).values())  # in LPIPS_LAYERS order

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
        """LPIPS distances (B,) of images ``x``, ``y`` (B, 3, H, W) in [-1, 1] ([0, 1] with ``normalize``)."""
        for name, img in (("x", x), ("y", y)):
            self.vgg._check_input(img, name)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        total = None
        for k, (f0, f1) in enumerate(zip(self.features(x), self.features(y))):
            d = pk.lpips_distance(f0, f1.to(f0.dtype), getattr(self, f"lin{k}"), eps=LPIPS_EPS)
            total = d if total is None else total + d
        assert total is not None
        return total
