"""Image quality metrics with the literature's conventions.

- ``psnr``: RGB (or any channels) in [0, 1], ``10 log10(1 / MSE)``: denoising and inpainting.
- ``psnr_y``: super-resolution convention: Y of BT.601 (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB
  in [0, 1], on a 0-255 scale), ``shave`` border pixels removed, peak 255.
"""
from __future__ import annotations

import math

import torch


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (``inf`` for identical images)."""
    _check_pair(a, b)
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(peak ** 2 / mse)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma on the 16-235 scale of RGB in [0, 1]: (B, 3, H, W) -> (B, 1, H, W), float64."""
    r, g, b = img.double().unbind(-3)
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b).unsqueeze(-3)


def psnr_y(a: torch.Tensor, b: torch.Tensor, shave: int = 0) -> float:
    """Super-resolution PSNR: Y channel (BT.601), ``shave`` pixels cut from every border, peak 255."""
    _check_pair(a, b)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    if shave:
        ya, yb = ya[..., shave:-shave, shave:-shave], yb[..., shave:-shave, shave:-shave]
    return psnr(ya, yb, peak=255.0)
