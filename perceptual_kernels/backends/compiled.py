"""The compiled backends ``cpu`` and ``cuda``: ``torch.ops.pk_native`` (C++ in ``csrc/``, registered per device,
so one set of functions serves both). Its schemas define the argument order of the kernel interface
(:mod:`perceptual_kernels.backends.interface`)."""

from __future__ import annotations

import torch

from . import native

if native.load() is None:  # importing _C registers torch.ops.pk_native
    raise ImportError(native.LOAD_ERROR)

gram_forward = torch.ops.pk_native.gram_forward
gram_backward = torch.ops.pk_native.gram_backward
style_loss_forward = torch.ops.pk_native.style_loss_forward
style_loss_backward = torch.ops.pk_native.style_loss_backward
content_loss_forward = torch.ops.pk_native.content_loss_forward
content_loss_backward = torch.ops.pk_native.content_loss_backward
tv_forward = torch.ops.pk_native.tv_forward
tv_backward = torch.ops.pk_native.tv_backward
instance_norm_forward = torch.ops.pk_native.instance_norm_forward
instance_norm_backward = torch.ops.pk_native.instance_norm_backward

# --- LPIPS layer distance
lpips_forward = torch.ops.pk_native.lpips_forward
lpips_backward = torch.ops.pk_native.lpips_backward
