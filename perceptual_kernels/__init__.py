"""perceptual_kernels: fused perceptual losses for PyTorch (Gram / style, content, total variation, instance
norm and conditional instance norm, the LPIPS layer distance) with Triton and compiled kernels behind torch
autograd and torch.compile.

>>> import perceptual_kernels as pk
>>> loss = pk.style_loss(features, target_gram) + pk.tv_loss(image, weight=1e-6)
"""

__version__ = "0.1.0"

from . import functional, nn
from ._info import info
from .backends import BackendUnavailableError, register_backend, use_backend
from .functional import (
    conditional_instance_norm,
    content_loss,
    gram_matrix,
    instance_norm,
    lpips_distance,
    style_loss,
    style_loss_gradient,
    tv_loss,
)

__all__ = [
    "BackendUnavailableError",
    "conditional_instance_norm",
    "content_loss",
    "functional",
    "gram_matrix",
    "info",
    "instance_norm",
    "lpips_distance",
    "nn",
    "register_backend",
    "style_loss",
    "style_loss_gradient",
    "tv_loss",
    "use_backend",
]
