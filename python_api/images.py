"""Image I/O and colour utilities for style transfer and super-resolution.

Images are float32 RGB tensors in [0, 1] of shape (1, 3, H, W); functions that take images also accept (3, H, W)
(and return the same rank) or a batch (B, 3, H, W) where that makes sense.

* :func:`load_image` reads any format Pillow reads, applies the EXIF orientation, composites alpha over white and
  keeps the full precision of 16-bit PNGs (greyscale, grey+alpha, RGB, RGBA) and 16-bit RGB(A) TIFFs (the colour
  ones, which Pillow decodes to 8 bit, are read with pypng and tifffile).
* :func:`save_image` quantises to 8 bit and writes atomically (temporary file + ``os.replace``), refusing to
  overwrite any of the ``protected`` input paths.
* :func:`resize` / :func:`resize_long_side`: antialiased bicubic resampling.
* :func:`luminance_transfer`, :func:`match_color` and :func:`preserve_colors`: colour preservation of a stylized
  result (Gatys et al. 2016, "Preserving color in neural artistic style transfer").
"""

from __future__ import annotations

import math
import os
import pathlib
import tempfile
import threading
import warnings
from collections.abc import Iterable

import numpy as np
import png
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from . import _checks

__all__ = [
    "COLOR_METHODS",
    "IMAGE_SUFFIXES",
    "MATCH_MODES",
    "SAVE_FORMATS",
    "ImageLike",
    "from_pil",
    "image_files",
    "load_image",
    "luminance_transfer",
    "match_color",
    "preserve_colors",
    "resize",
    "resize_long_side",
    "save_image",
    "to_pil",
]

#: An image tensor or the path of an image file.
ImageLike = torch.Tensor | str | os.PathLike
#: Suffixes (lower case) of the files :func:`image_files` lists.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Methods accepted by :func:`preserve_colors`.
COLOR_METHODS = ("luminance", "mean_cov", "histogram")
#: Modes accepted by :func:`match_color`.
MATCH_MODES = ("mean_cov", "histogram")
#: File suffix (lower case) -> Pillow format used by :func:`save_image`.
SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}, "TIFF": {"compression": "tiff_deflate"}}

# BT.601 luma weights: the Y of YIQ and of BT.601 YCbCr.
_LUMA = (0.299, 0.587, 0.114)
_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------------------------------
# Tensor shape helpers
# --------------------------------------------------------------------------------------------------------------


def _as_batch(name: str, img: object, *, channels: int | None = 3) -> tuple[torch.Tensor, bool]:
    """``img`` as a 4-D tensor plus whether it was 3-D (so the result can be squeezed back)."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() == 3:
        img, squeeze = img.unsqueeze(0), True
    elif img.dim() == 4:
        squeeze = False
    else:
        raise ValueError(f"{name} must be (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}")
    if channels is not None and img.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(img.shape)}")
    if img.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (values in [0, 1]), got {img.dtype}")
    return img, squeeze


def _restore(img: torch.Tensor, squeeze: bool) -> torch.Tensor:
    return img.squeeze(0) if squeeze else img


# --------------------------------------------------------------------------------------------------------------
# Pillow <-> numpy / tensors
# --------------------------------------------------------------------------------------------------------------


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """float (H, W, 4) straight-alpha RGBA in [0, 1] -> (H, W, 3) RGB over a white background."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    return rgb * alpha + (1.0 - alpha)


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """A Pillow image of any mode -> float32 (H, W, 3) RGB in [0, 1] (alpha composited over white)."""
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (Pillow >= 10 gives "I;16" for 16-bit PNGs, older versions "I"): full 16-bit precision.
        raw = np.asarray(im)
        grey = raw.astype(np.float64) / 65535.0
        grey = np.clip(grey, 0.0, 1.0)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        if isinstance(transparency, int):  # tRNS colour key of a 16-bit greyscale PNG
            alpha = (raw != transparency).astype(np.float64)[..., None]
            rgb = rgb * alpha + (1.0 - alpha)
        return rgb.astype(np.float32)
    if mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (transparency is not None and mode in ("L", "RGB", "P", "1")):
        if mode == "La":
            im = im.convert("LA")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        if im.mode == "1":
            im = im.convert("L")
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite_over_white(rgba).astype(np.float32)
    if mode == "L":
        grey = np.asarray(im, dtype=np.float32) / 255.0
        return np.repeat(grey[..., None], 3, axis=2)
    if mode != "RGB":  # "1", "P", "CMYK", "YCbCr", "LAB", "HSV", ...
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / 255.0


def from_pil(pil_image: Image.Image) -> torch.Tensor:
    """A Pillow image -> float32 (1, 3, H, W) RGB in [0, 1].

    Greyscale, palette, CMYK and 16-bit greyscale ("I;16", "I", scaled by 65535) are converted to RGB; alpha is
    composited over white. No EXIF orientation is applied here (see :func:`load_image`). Pillow itself decodes
    16-bit RGB(A) files to 8 bit, so use :func:`load_image` for those to keep their full precision.
    """
    if not isinstance(pil_image, Image.Image):
        raise TypeError(f"pil_image must be a PIL.Image.Image, got {type(pil_image).__name__}")
    arr = _pil_to_array(pil_image)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)


def _to_uint8(img: torch.Tensor, name: str = "img") -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3), clamped and rounded; ValueError for NaN / Inf."""
    batch, _ = _as_batch(name, img)
    if batch.shape[0] != 1:
        raise ValueError(
            f"{name} must hold a single image, got a batch of {batch.shape[0]} "
            f"(shape {tuple(img.shape)}); save the images one at a time"
        )
    x = batch[0].detach().to("cpu", torch.float32)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(
            f"{name} has {bad} non-finite values (NaN or Inf) of {x.numel()}: refusing to write them "
            f"as black or white pixels"
        )
    x = x.clamp(0.0, 1.0)
    q = (x * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(q.permute(1, 2, 0).numpy())


def to_pil(img: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [0, 1] -> 8-bit RGB Pillow image (clamped, rounded); ValueError for NaN / Inf
    values."""
    return Image.fromarray(_to_uint8(img))


# --------------------------------------------------------------------------------------------------------------
# 16-bit colour files: Pillow has no 16-bit multichannel mode and decodes them to 8 bit, so pypng (PNG) and
# tifffile (TIFF) read their samples
# --------------------------------------------------------------------------------------------------------------


def _read_png16(path: pathlib.Path) -> np.ndarray | None:
    """float64 (H, W, 3) of a 16-bit RGB / RGBA / grey+alpha PNG (a tRNS colour key and alpha composited over
    white), None for any other PNG and for one pypng cannot read (Pillow then reads it or says why not)."""
    try:
        reader = png.Reader(filename=os.fspath(path))
        reader.preamble()
        if reader.bitdepth != 16 or reader.color_type not in (2, 4, 6):
            return None
        width, height, rows, info = reader.asDirect()  # the tRNS colour key becomes an alpha channel
        values = np.frombuffer(b"".join(row.tobytes() for row in rows), dtype=np.uint16)
    except png.Error:
        return None
    arr = values.reshape(height, width, info["planes"]) / 65535.0
    if info["greyscale"]:  # grey (+ alpha) -> RGB (+ alpha)
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]], axis=2)
    return _composite_over_white(arr) if info["alpha"] else arr


def _read_tiff16(path: pathlib.Path) -> np.ndarray | None:
    """float64 (H, W, 3) of a single-page 16-bit RGB / RGBA TIFF (alpha composited over white), None for any other
    TIFF and for one tifffile cannot read (Pillow then reads it, at 8 bit). A compression tifffile cannot undo on
    its own (LZW and others need the imagecodecs package) says so in a warning."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if (
                len(tif.pages) != 1
                or page.photometric != tifffile.PHOTOMETRIC.RGB
                or page.dtype != np.uint16
                or page.samplesperpixel not in (3, 4)
            ):
                return None
            if page.compression not in tifffile.TIFF.DECOMPRESSORS:
                warnings.warn(
                    f"{path} is read at 8 bit: its {page.compression.name} compression needs the imagecodecs "
                    f"package (pip install imagecodecs) to keep the 16-bit samples",
                    stacklevel=4,
                )
                return None
            arr = page.asarray()
            separate = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    except Exception:  # a damaged file: Pillow's reading says what is wrong with it
        return None
    arr = (np.moveaxis(arr, 0, -1) if separate else arr) / 65535.0
    return _composite_over_white(arr) if arr.shape[-1] == 4 else arr


def _read_16bit_colour(path: pathlib.Path, im: Image.Image) -> np.ndarray | None:
    """Full-precision float64 (H, W, 3) of a 16-bit colour PNG or TIFF, which Pillow would decode to 8 bit; None for
    any other file (Pillow reads those)."""
    if im.mode not in ("RGB", "RGBA") or getattr(im, "n_frames", 1) != 1:
        return None
    if im.format == "PNG":
        return _read_png16(path)
    if im.format == "TIFF":
        return _read_tiff16(path)
    return None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array exactly like ``ImageOps.exif_transpose``."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return arr[:, ::-1]
    if orientation == 3:  # ROTATE_180
        return arr[::-1, ::-1]
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return arr[::-1]
    if orientation == 5:  # TRANSPOSE
        return arr.swapaxes(0, 1)
    if orientation == 6:  # ROTATE_270 (90 degrees clockwise)
        return np.rot90(arr, k=-1)
    if orientation == 7:  # TRANSVERSE
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:  # ROTATE_90 (90 degrees counter-clockwise)
        return np.rot90(arr, k=1)
    return arr


def image_files(folder: pathlib.Path, *, recursive: bool = False) -> list[pathlib.Path]:
    """The image files (by :data:`IMAGE_SUFFIXES`, any case) in ``folder`` (and its subfolders with
    ``recursive``), sorted."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image(
    path: str | os.PathLike, *, long_side: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Read an image file as a float32 (1, 3, H, W) RGB tensor in [0, 1].

    The EXIF orientation is applied; greyscale, palette, CMYK, ... are converted to RGB; alpha (RGBA, LA, palette
    transparency, tRNS colour keys) is composited over white; 16-bit files keep their precision (values / 65535).
    ``long_side``: resize (antialiased bicubic) so that the longer side has this many pixels. ``device``: where the
    tensor goes. Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a file that cannot be read
    as an image.
    """
    p = pathlib.Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(2, "no such image file", str(path))
    if long_side is not None and (isinstance(long_side, bool) or not isinstance(long_side, int) or long_side < 1):
        raise ValueError(f"long_side must be a positive int or None, got {long_side!r}")
    try:
        with Image.open(p) as im:
            arr = _read_16bit_colour(p, im)
            if arr is not None:
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                arr = _orient(arr, orientation if isinstance(orientation, int) else 1)
            else:
                im.load()
                oriented = ImageOps.exif_transpose(im)
                arr = _pil_to_array(oriented if oriented is not None else im)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    img = torch.from_numpy(chw).unsqueeze(0)
    if long_side is not None:
        img = resize_long_side(img, long_side)
    if device is not None:
        img = img.to(device)
    return img


# --------------------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------------------


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of (C, H, W) or (B, C, H, W) to ``size`` = (height, width), clamped to [0, 1]."""
    batch, squeeze = _as_batch("img", img, channels=None)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size)
    ):
        raise ValueError(f"size must be (height, width) with positive ints, got {size!r}")
    h, w = int(size[0]), int(size[1])
    if (h, w) == tuple(batch.shape[-2:]):
        return _restore(batch.clamp(0.0, 1.0), squeeze)
    dtype = batch.dtype
    work = batch if dtype in (torch.float32, torch.float64) else batch.float()
    out = F.interpolate(work, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return _restore(out.clamp(0.0, 1.0).to(dtype), squeeze)


def _long_side_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(h, w)
    new_h = long_side if h >= w else max(1, math.floor(h * scale + 0.5))
    new_w = long_side if w >= h else max(1, math.floor(w * scale + 0.5))
    return new_h, new_w


def resize_long_side(img: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize (antialiased bicubic) so the longer side is ``long_side`` pixels, keeping the aspect ratio (the
    shorter side is rounded, at least 1 pixel)."""
    if isinstance(long_side, bool) or not isinstance(long_side, (int, np.integer)) or long_side < 1:
        raise ValueError(f"long_side must be a positive int, got {long_side!r}")
    batch, _ = _as_batch("img", img, channels=None)
    return resize(img, _long_side_size(batch.shape[-2], batch.shape[-1], int(long_side)))


# --------------------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------------------


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask. ``os.umask`` reads it only by setting it: set a strict one and restore it at once,
    under a lock (the umask is process-wide), so that no other file is created with a looser mode meanwhile."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def save_image(
    img: torch.Tensor, path: str | os.PathLike, *, protected: Iterable[str | os.PathLike] | str | os.PathLike = ()
) -> pathlib.Path:
    """Write a (3, H, W) or (1, 3, H, W) image in [0, 1] (clamped, rounded to 8 bit) to ``path`` and return the
    resolved path.

    The format follows the suffix: .png, .jpg / .jpeg (quality 95), .webp (quality 95), .bmp, .tif / .tiff. The
    file is written atomically (a temporary file in the same directory, then ``os.replace``); parent directories
    are created. Raises ``ValueError`` if ``path`` is (resolves to, or is a hard link of) the same file as any path
    in ``protected`` (the inputs), so an input is never overwritten; if the suffix is unknown or the folder cannot
    be written; and if the image holds NaN or Inf values (they are never written silently as black pixels).
    """
    target = _checks.output_path(
        "path", path, (protected,) if isinstance(protected, (str, os.PathLike)) else protected, SAVE_FORMATS
    )
    pixels = _to_uint8(img, f"the image for {path}")
    fmt = SAVE_FORMATS[target.suffix.lower()]
    target.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(pixels)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return target


# --------------------------------------------------------------------------------------------------------------
# Colour preservation
# --------------------------------------------------------------------------------------------------------------


def _colour_pair(
    result: torch.Tensor, content: torch.Tensor, *, same_size: bool
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both as 4-D on result's device / dtype; content's batch broadcast to result's; resized if ``same_size``."""
    r, squeeze = _as_batch("result", result)
    c, _ = _as_batch("content", content)
    if c.shape[0] not in (1, r.shape[0]):
        raise ValueError(f"content must have batch 1 or result's batch {r.shape[0]}, got shape {tuple(content.shape)}")
    c = c.to(device=r.device, dtype=r.dtype)
    if same_size and c.shape[-2:] != r.shape[-2:]:
        c = resize(c, tuple(r.shape[-2:]))
    if c.shape[0] != r.shape[0]:
        c = c.expand(r.shape[0], *c.shape[1:])
    return r, c, squeeze


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def luminance_transfer(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the luminance of ``result`` with the chrominance of ``content``.

    Y is the BT.601 luma (the Y of YIQ and of YCbCr); recombining result's Y with content's I, Q (or Cb, Cr) is
    ``content + (Y(result) - Y(content))`` per pixel. Colours that fall outside [0, 1] are desaturated towards
    grey at constant luminance (not clipped per channel), so the output keeps result's luminance exactly; a final
    clamp only removes rounding. ``content`` is resized to result's size if needed.
    """
    r, c, squeeze = _colour_pair(result, content, same_size=True)
    y = _luma(r).clamp(0.0, 1.0)
    chroma = c - _luma(c)  # content's chrominance as an RGB offset (its luma is 0)
    # largest t in [0, 1] with y + t * chroma inside [0, 1] for every channel
    up = torch.where(chroma > 0, (1.0 - y) / chroma.clamp_min(1e-12), torch.full_like(chroma, math.inf))
    down = torch.where(chroma < 0, y / (-chroma).clamp_min(1e-12), torch.full_like(chroma, math.inf))
    t = torch.minimum(up, down).amin(dim=1, keepdim=True).clamp(max=1.0)
    out = (y + t * chroma).clamp(0.0, 1.0)
    return _restore(out, squeeze)


def _mean_cov_match(r: torch.Tensor, c: torch.Tensor, eps: float) -> torch.Tensor:
    b = r.shape[0]
    x = r.reshape(b, 3, -1).double()
    y = c.reshape(c.shape[0], 3, -1).double()
    mx, my = x.mean(dim=2, keepdim=True), y.mean(dim=2, keepdim=True)
    xc, yc = x - mx, y - my
    cx = xc @ xc.transpose(1, 2) / x.shape[2]
    cy = yc @ yc.transpose(1, 2) / y.shape[2]

    def sym_pow(m: torch.Tensor, p: float, reg: float) -> torch.Tensor:
        evals, evecs = torch.linalg.eigh(m)
        evals = evals.clamp_min(0.0) + reg
        return evecs @ torch.diag_embed(evals**p) @ evecs.transpose(1, 2)

    # eps-regularised inverse square root of result's covariance, plain square root of content's
    a = sym_pow(cy, 0.5, 0.0) @ sym_pow(cx, -0.5, eps)
    out = a @ xc + my
    return out.reshape(r.shape).to(r.dtype)


def _histogram_match(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    b = r.shape[0]
    x = r.reshape(b, 3, -1)
    y, _ = c.reshape(c.shape[0], 3, -1).sort(dim=2)
    n, m = x.shape[2], y.shape[2]
    if m != n:  # content's quantiles at result's ranks, linear interpolation
        pos = (
            torch.linspace(0.0, m - 1, n, device=r.device, dtype=torch.float64)
            if n > 1
            else torch.zeros(1, device=r.device, dtype=torch.float64)
        )
        lo = pos.floor().long().clamp(max=m - 1)
        hi = (lo + 1).clamp(max=m - 1)
        frac = (pos - lo).to(r.dtype)
        y = y[..., lo] * (1 - frac) + y[..., hi] * frac
    order = x.argsort(dim=2, stable=True)
    out = torch.empty_like(x).scatter_(2, order, y.expand(b, 3, n).to(x.dtype))
    return out.reshape(r.shape)


def match_color(
    result: torch.Tensor, content: torch.Tensor, mode: str = "mean_cov", *, eps: float = 1e-5, clamp: bool = True
) -> torch.Tensor:
    """Match the colour statistics of ``result`` to those of ``content`` (per image of the batch).

    ``mode="mean_cov"``: the affine map ``x -> C_c^1/2 C_r^-1/2 (x - mu_r) + mu_c`` (symmetric matrix square
    roots by eigendecomposition in float64, ``eps`` added to the eigenvalues) so the mean and 3x3 covariance of
    the RGB values equal content's. ``mode="histogram"``: exact per-channel histogram matching (each value is
    replaced by content's value of the same rank; content's quantiles are interpolated when the pixel counts
    differ). The statistics are taken from ``content`` at its own size. ``clamp``: clamp the output to [0, 1].
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"unknown colour-matching mode {mode!r}; expected one of {', '.join(MATCH_MODES)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    r, c, squeeze = _colour_pair(result, content, same_size=False)
    out = _mean_cov_match(r, c, float(eps)) if mode == "mean_cov" else _histogram_match(r, c)
    if clamp:
        out = out.clamp(0.0, 1.0)
    return _restore(out, squeeze)


def preserve_colors(result: torch.Tensor, content: torch.Tensor, method: str) -> torch.Tensor:
    """Give a stylized ``result`` the colours of ``content``: ``method`` is "luminance" (:func:`luminance_transfer`),
    "mean_cov" or "histogram" (:func:`match_color`)."""
    if method == "luminance":
        return luminance_transfer(result, content)
    if method in MATCH_MODES:
        return match_color(result, content, method)
    raise ValueError(f"unknown colour-preservation method {method!r}; expected one of {', '.join(COLOR_METHODS)}")


def as_image(
    value: torch.Tensor | str | os.PathLike, name: str = "image", device: torch.device | str | None = None
) -> torch.Tensor:
    """A path (loaded with :func:`load_image`) or an image tensor (C, H, W) / (1, C, H, W), as a detached float32
    (1, C, H, W) tensor on ``device``. ``name`` is used in the error for anything else."""
    if not isinstance(value, torch.Tensor):
        return load_image(value, device=device)
    value = value.unsqueeze(0) if value.dim() == 3 else value
    if value.dim() != 4 or value.shape[0] != 1 or not value.is_floating_point():
        raise ValueError(
            f"{name} must be an image tensor (1, C, H, W) or (C, H, W) in [0, 1] or a path, "
            f"got {tuple(value.shape)} {value.dtype}"
        )
    return value.detach().to(device=device, dtype=torch.float32)
