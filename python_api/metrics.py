"""Image quality metrics and the super-resolution evaluation protocol, with the literature's conventions.

- ``psnr``: RGB (or any channels) in [0, 1], ``10 log10(1 / MSE)``: denoising and inpainting.
- ``psnr_y``: super-resolution convention: Y of BT.601 (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB
  in [0, 1], on a 0-255 scale), ``shave`` border pixels removed, peak 255.
- ``ssim``: SSIM of Wang et al. 2004 exactly as their MATLAB ``ssim_index`` (= skimage's ``structural_similarity``
  with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``): an 11x11 Gaussian window of sigma 1.5
  (``fspecial('gaussian', 11, 1.5)``), K1 = 0.01, K2 = 0.03, local statistics by ``filter2(..., 'valid')`` (so
  only windows that fit inside the image), the mean of the SSIM map; per channel (and image of a batch), then
  averaged; float64 throughout.
- ``ssim_y``: SSIM of the BT.601 Y channel above (not rounded; data range 255), ``shave`` border pixels removed.
- ``imresize``: MATLAB's ``imresize(..., 'bicubic')`` in float64 (Keys cubic with a = -0.5; when downscaling the
  kernel is widened by 1/scale (antialiasing); output pixel ``x`` (1-based) samples input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; out-of-range taps are mirrored with the edge pixel repeated, as
  MATLAB's ``[1:n, n:-1:1]`` index table; the dimension with the smaller scale is resized first; output size
  ``ceil(scale * size)``); no clamping or rounding.
- ``modcrop``: crop H and W down to multiples of the scale, keeping the top-left corner (the literature's
  ``modcrop.m``).

Super-resolution protocol (``bicubic_baseline``, ``evaluate_sr``)
---------------------------------------------------------------
For every ground-truth RGB image ``hr`` (values k / 255) and integer ``scale``:

1. ``hr = modcrop(hr, scale)`` (top-left aligned);
2. ``lr = q8(imresize(hr, 1 / scale))``: MATLAB bicubic, in RGB, then rounded to 8 bit as when the LR image is
   saved as a PNG (``q8(x) = floor(255 * clamp(x, 0, 1) + 0.5) / 255``, MATLAB's ``uint8`` rounding);
3. ``sr = q8(upscale(lr))`` (the output saved as an 8-bit image), or for the bicubic baseline
   ``sr = q8(imresize(lr, scale))``;
4. PSNR-Y and SSIM-Y between ``sr`` and ``hr``: Y = BT.601 luma of the 8-bit RGB values computed in floating
   point (not rounded to an integer Y), ``scale`` pixels shaved from every border, peak / data range 255;
   per image, then the plain mean over the images.

With this protocol Set5 x4 bicubic gives PSNR-Y 31.787 (baby), 30.186 (bird), 22.100 (butterfly),
31.617 (head), 26.467 (woman), mean 28.431 dB, and SSIM-Y 0.8577, 0.8738, 0.7374, 0.7548, 0.8326, mean 0.8113
(Johnson et al.'s table: 28.43 / 0.8114). The 8-bit rounding of LR and SR moves the mean by about 0.001 dB (no
rounding at all: 28.432 dB / 0.8114); what matters is that Y is *not* rounded: rounding Y to 8 bit (MATLAB's
``rgb2ycbcr`` on uint8 images, as in the SRCNN / VDSR scripts, which resize that uint8 Y channel alone and
round the result) gives the SRCNN / VDSR table's 28.42 dB / 0.8104 instead (baby 31.78, head 31.59).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

import torch

__all__ = [
    "bicubic_baseline",
    "evaluate_sr",
    "imresize",
    "lpips",
    "modcrop",
    "psnr",
    "psnr_y",
    "rgb_to_y",
    "ssim",
    "ssim_y",
]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"images must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    for name, x in (("first", a), ("second", b)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"the {name} image holds NaN or Inf values: no meaningful quality metric")


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (``inf`` for identical images)."""
    _check_pair(a, b)
    if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not math.isfinite(peak) or peak <= 0:
        raise ValueError(f"peak must be a finite number > 0, got {peak!r}")
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


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


def _shave(x: torch.Tensor, shave: int) -> torch.Tensor:
    if isinstance(shave, bool) or not isinstance(shave, int) or shave < 0:
        raise ValueError(f"shave must be a non-negative int, got {shave!r}")
    if shave and min(x.shape[-2:]) <= 2 * shave:
        raise ValueError(f"cannot shave {shave} pixels from an image of size {tuple(x.shape[-2:])}")
    return x[..., shave:-shave, shave:-shave] if shave else x


# --------------------------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------------------------


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """MATLAB's ``fspecial('gaussian', size, sigma)``: (size, size), values below eps * max set to 0, sum 1."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    h = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma * sigma))
    h = torch.where(h < torch.finfo(torch.float64).eps * h.max(), torch.zeros_like(h), h)
    return (h / h.sum()).to(dtype)


def _valid_correlate_1d(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """``sum_k taps[k] * x[..., i + k, ...]`` along ``dim`` over the positions where the taps fit."""
    n = x.shape[dim] - taps.numel() + 1
    out = taps[0] * x.narrow(dim, 0, n)
    for k in range(1, taps.numel()):
        out = out + taps[k] * x.narrow(dim, k, n)
    return out


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two images of the same shape (..., H, W), e.g. (B, C, H, W).

    Gaussian ``window`` x ``window`` weights of std ``sigma``, K1 = 0.01, K2 = 0.03 (C1 = (K1 L)^2,
    C2 = (K2 L)^2 with L = ``data_range``), population (not sample) covariances, only the windows that lie
    inside the image ('valid'); the SSIM map is averaged per channel and the channels (and images) averaged.
    Computed in float64. Equals MATLAB's ``ssim_index`` and skimage's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)``.
    """
    _check_pair(a, b)
    if a.dim() < 2:
        raise ValueError(f"images must have at least 2 dimensions (H, W), got shape {tuple(a.shape)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if not sigma > 0 or not data_range > 0:
        raise ValueError(f"sigma and data_range must be positive, got {sigma!r} and {data_range!r}")
    h, w = a.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"images of size {h}x{w} are smaller than the {window}x{window} SSIM window")
    x = a.detach().double().reshape(-1, 1, h, w)
    y = b.detach().double().reshape(-1, 1, h, w)
    if x.shape[0] == 0:
        raise ValueError("images must not be empty")
    kernel = _gaussian_window(window, float(sigma), torch.float64, x.device)
    # the five local statistics by one valid correlation (= filter2 for this symmetric window); separably when
    # fspecial's cut-off left the window an outer product (always, unless sigma is small for the window)
    # (shifted sums: float64 convolutions are slow on the CPU)
    planes = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    row = kernel.sum(dim=1)
    if torch.allclose(torch.outer(row, row), kernel, rtol=1e-12, atol=0.0):
        stats = _valid_correlate_1d(_valid_correlate_1d(planes, row, -2), row, -1)
    else:
        stats = sum(
            kernel[i, j] * planes[..., i : i + h - window + 1, j : j + w - window + 1]
            for i in range(window)
            for j in range(window)
        )
    stats = stats.reshape(x.shape[0], 5, h - window + 1, w - window + 1)
    mu_x, mu_y, xx, yy, xy = stats.unbind(1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-2, -1)).mean().item()


def ssim_y(a: torch.Tensor, b: torch.Tensor, shave: int = 0) -> float:
    """Super-resolution SSIM: Y channel (BT.601, 16-235 scale, not rounded), ``shave`` pixels cut from every
    border, data range 255. ``a``, ``b``: (B, 3, H, W) or (3, H, W) RGB in [0, 1]."""
    _check_pair(a, b)
    return ssim(_shave(rgb_to_y(a), shave), _shave(rgb_to_y(b), shave), data_range=255.0)


# --------------------------------------------------------------------------------------------------------------
# MATLAB imresize (bicubic)
# --------------------------------------------------------------------------------------------------------------


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), support [-2, 2]."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(
    in_length: int, out_length: int, scale: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB's ``contributions``: (out_length, P) float64 weights and 0-based input indices (mirrored)."""
    kernel_width = 4.0
    if scale < 1:  # antialiasing: the kernel stretched by 1 / scale

        def kernel(t: torch.Tensor) -> torch.Tensor:
            return scale * _cubic(scale * t)

        kernel_width /= scale
    else:
        kernel = _cubic
    x = torch.arange(1, out_length + 1, dtype=torch.float64, device=device)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64, device=device)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric padding with the edge repeated: MATLAB's aux = [1:n, n:-1:1] (1-based)
    aux = torch.cat([torch.arange(in_length, device=device), torch.arange(in_length - 1, -1, -1, device=device)])
    indices = aux[torch.remainder(indices.long() - 1, 2 * in_length)]
    keep = (weights != 0).any(dim=0)  # drop the all-zero columns
    return weights[:, keep], indices[:, keep]


def _resize_dim(x: torch.Tensor, dim: int, out_length: int, scale: float) -> torch.Tensor:
    weights, indices = _contributions(x.shape[dim], out_length, scale, x.device)
    moved = x.movedim(dim, -1)
    out = (moved[..., indices] * weights).sum(dim=-1)
    return out.movedim(-1, dim)


def _positive_pair(name: str, value: object, kind: type) -> tuple:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(
        not isinstance(v, bool) and isinstance(v, kind if kind is int else (int, float)) and v > 0 and math.isfinite(v)
        for v in items
    )
    if not ok:
        what = "positive int" if kind is int else "positive number"
        raise ValueError(f"{name} must be a {what} or a pair of them, got {value!r}")
    return items


def _imresize(x: torch.Tensor, scales: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    (sh, sw), (oh, ow) = scales, size
    steps = [(-2, oh, sh), (-1, ow, sw)]
    if sh > sw:  # MATLAB resizes along the dimension with the smaller scale first
        steps.reverse()
    for dim, n, s in steps:
        x = _resize_dim(x, dim, n, s)
    return x


def imresize(
    img: torch.Tensor, scale: float | tuple[float, float] | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """MATLAB's ``imresize(img, scale, 'bicubic')`` / ``imresize(img, [h w], 'bicubic')`` (antialiasing on).

    ``img``: (B, C, H, W) (or any (..., H, W)) floating-point tensor. Give exactly one of ``scale`` (a number or
    (scale_h, scale_w); output size ``ceil(scale * H)`` x ``ceil(scale * W)``) or ``size`` = (height, width) (the
    scales are then ``height / H`` and ``width / W``). Computed in float64 and returned in ``img``'s dtype; no
    clamping, no rounding (MATLAB's uint8 path is ``round(clamp(imresize(double(img))))``).
    """
    if not isinstance(img, torch.Tensor) or not img.is_floating_point() or img.dim() < 2:
        raise TypeError("img must be a floating-point tensor of shape (..., H, W)")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    h, w = img.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"img must not be empty, got shape {tuple(img.shape)}")
    if scale is not None:
        sh, sw = (float(v) for v in _positive_pair("scale", scale, float))
        oh, ow = math.ceil(sh * h), math.ceil(sw * w)
    else:
        oh, ow = _positive_pair("size", size, int)
        sh, sw = oh / h, ow / w
    return _imresize(img.double(), (sh, sw), (int(oh), int(ow))).to(img.dtype)


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the last two dimensions (H, W) down to multiples of ``scale``, keeping the top-left corner."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    if not isinstance(img, torch.Tensor) or img.dim() < 2:
        raise TypeError("img must be a tensor of shape (..., H, W)")
    h, w = img.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"image of size {h}x{w} is smaller than the scale {scale}")
    return img[..., : h - h % scale, : w - w % scale]


# --------------------------------------------------------------------------------------------------------------
# Super-resolution evaluation
# --------------------------------------------------------------------------------------------------------------


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """To 8 bit and back, as saving an image: clamp to [0, 1], ``floor(255 x + 0.5)`` (MATLAB's uint8), / 255."""
    return torch.floor(x.double().clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0


def _check_scale(scale: object) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    return scale


def _check_rgb(name: str, img: object) -> torch.Tensor:
    if not isinstance(img, torch.Tensor) or not img.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor")
    if img.dim() not in (3, 4) or img.shape[-3] != 3:
        raise ValueError(f"{name} must be (3, H, W) or (B, 3, H, W) RGB, got shape {tuple(img.shape)}")
    return img


def _downscale(hr64: torch.Tensor, scale: int) -> torch.Tensor:
    """The 8-bit LR image of a modcropped float64 HR image."""
    h, w = hr64.shape[-2:]
    return _quantize(_imresize(hr64, (1.0 / scale, 1.0 / scale), (h // scale, w // scale)))


def _upscale_bicubic(lr64: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = lr64.shape[-2:]
    return _quantize(_imresize(lr64, (float(scale), float(scale)), (h * scale, w * scale)))


def bicubic_baseline(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The literature's bicubic super-resolution baseline of an HR RGB image (values in [0, 1]):
    ``q8(imresize(q8(imresize(modcrop(hr, scale), 1 / scale)), scale))`` with ``q8`` the rounding to 8 bit (the
    LR image and the result as saved 8-bit images). Returns the modcropped size, in ``hr``'s dtype."""
    scale = _check_scale(scale)
    hr = _check_rgb("hr", hr)
    hr64 = modcrop(hr, scale).double()
    return _upscale_bicubic(_downscale(hr64, scale), scale).to(hr.dtype)


def evaluate_sr(
    hr_images: Mapping[str, torch.Tensor],
    scale: int,
    upscale: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    lpips_model: torch.nn.Module | None = None,
) -> dict:
    """Evaluate super-resolution with the literature's protocol (see the module docstring).

    For each image: ``hr = modcrop(hr, scale)``; ``lr`` = MATLAB bicubic downscaling by ``1 / scale`` rounded to
    8 bit (passed to ``upscale`` in ``hr``'s dtype and device, shape (1, 3, h, w) or as given); ``sr =
    upscale(lr)`` (run under ``torch.no_grad``, must have the modcropped HR shape), clamped and rounded to 8 bit,
    or the bicubic baseline when ``upscale`` is None; PSNR-Y and SSIM-Y with ``scale`` pixels shaved.

    Returns ``{"scale": scale, "per_image": {name: {"psnr_y": dB, "ssim_y": s}}, "mean": {"psnr_y": dB,
    "ssim_y": s}}`` (means over the images). With ``lpips_model`` (a :class:`.lpips_vgg.LPIPS`) every row also
    has ``"lpips"``: LPIPS-VGG of the 8-bit RGB ``sr`` and ``hr`` in [0, 1] (whole images, not shaved), computed
    in float32 on the model's device.
    """
    scale = _check_scale(scale)
    if not isinstance(hr_images, Mapping) or not hr_images:
        raise ValueError("hr_images must be a non-empty mapping name -> image")
    per_image: dict[str, dict[str, float]] = {}
    for name, hr in hr_images.items():
        hr = _check_rgb(f"hr_images[{name!r}]", hr)
        hr64 = modcrop(hr, scale).detach().double()
        lr64 = _downscale(hr64, scale)
        if upscale is None:
            sr64 = _upscale_bicubic(lr64, scale)
        else:
            with torch.no_grad():
                sr = upscale(lr64.to(hr.dtype))
            if not isinstance(sr, torch.Tensor) or sr.shape != hr64.shape:
                got = tuple(sr.shape) if isinstance(sr, torch.Tensor) else type(sr).__name__
                raise ValueError(f"upscale returned {got} for {name!r}; expected shape {tuple(hr64.shape)}")
            sr64 = _quantize(sr.detach().to(hr64.device))
        per_image[name] = {"psnr_y": psnr_y(sr64, hr64, shave=scale), "ssim_y": ssim_y(sr64, hr64, shave=scale)}
        if lpips_model is not None:
            per_image[name]["lpips"] = _lpips_of_pair(lpips_model, sr64, hr64)
    n = len(per_image)
    keys = ("psnr_y", "ssim_y") + (("lpips",) if lpips_model is not None else ())
    mean = {key: sum(v[key] for v in per_image.values()) / n for key in keys}
    return {"scale": scale, "per_image": per_image, "mean": mean}


def _lpips_of_pair(model: torch.nn.Module, sr64: torch.Tensor, hr64: torch.Tensor) -> float:
    """LPIPS of two (1, 3, H, W) / (3, H, W) images in [0, 1], float32 on the model's device."""
    device = next(iter(model.buffers())).device
    a, b = (t.reshape(1, *t.shape[-3:]).to(device=device, dtype=torch.float32) for t in (sr64, hr64))
    with torch.no_grad():
        return float(model(a, b, normalize=True)[0])


# --- LPIPS (VGG) ------------------------------------------------------------------------------------------------
_LPIPS_MODELS: dict[tuple[str, str | None], torch.nn.Module] = {}


def lpips(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    normalize: bool = False,
    vgg_weights: str | os.PathLike = "imagenet",
    lin_weights: str | os.PathLike | None = None,
) -> torch.Tensor:
    """LPIPS-VGG distances (B,) float32 of images ``x``, ``y`` (B, 3, H, W) in [-1, 1] (``normalize=True``: in
    [0, 1]), as the ``lpips`` package's ``LPIPS(net='vgg')`` computes them (see :mod:`.lpips_vgg`): its scaling
    layer, VGG16 relu1_2 ... relu5_3, the fused :func:`perceptual_kernels.lpips_distance` per layer, summed.

    ``lin_weights``: the linear-layer file; None takes the installed ``lpips`` package's ``weights/v0.1/vgg.pth``
    (FileNotFoundError saying ``pip install lpips`` when it is not installed). ``vgg_weights`` as
    :class:`VGGFeatures`. The model is built once per (vgg_weights, lin_weights) and moved to ``x``'s device;
    gradients flow to ``x`` and ``y``.
    """
    from .lpips_vgg import LPIPS

    key = (os.fspath(vgg_weights), None if lin_weights is None else os.fspath(lin_weights))
    model = _LPIPS_MODELS.get(key)
    if model is None:
        model = _LPIPS_MODELS[key] = LPIPS(vgg_weights, lin_weights)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, not {type(x).__name__}")
    return model.to(x.device)(x, y, normalize=normalize)
