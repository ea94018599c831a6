"""Triton backend: one module per op, forward and backward kernels side by side.

Importing this package imports ``triton``; :mod:`perceptual_kernels.backends` does so lazily, only when the
backend is first used, so the library imports without Triton.
"""

from .content import content_loss_backward, content_loss_forward
from .gram import gram_backward, gram_forward, style_loss_backward, style_loss_forward
from .instance_norm import instance_norm_backward, instance_norm_forward
from .lpips import lpips_backward, lpips_forward
from .tv import tv_backward, tv_forward

__all__ = [
    "content_loss_backward",
    "content_loss_forward",
    "gram_backward",
    "gram_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "lpips_backward",
    "lpips_forward",
    "style_loss_backward",
    "style_loss_forward",
    "tv_backward",
    "tv_forward",
]
