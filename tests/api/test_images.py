"""Image I/O and colour utilities (perceptual_kernels.api.images): offline, on images generated in tmp_path."""

from __future__ import annotations

import math
import os
import pathlib
import struct
import zlib

import numpy as np
import pytest
import torch
from _helpers import SHARED_DATA
from PIL import Image, ImageOps

from perceptual_kernels.api import images

STYLES = SHARED_DATA / "styles"
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------------------------------------------
# helpers: files Pillow cannot write (16-bit RGB(A) / grey+alpha PNG, 16-bit RGB TIFF)
# ---------------------------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: pathlib.Path, arr: np.ndarray, *, exif: bytes | None = None) -> None:
    """A 16-bit PNG of ``arr`` (H, W) grey, (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; rows use the
    Sub / Up / Paeth filters in turn so the decoder's unfiltering (bytes per pixel) is exercised."""
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    raw = arr.astype(">u2").reshape(h, w * c).view(np.uint8).astype(np.int32).reshape(h, w * bpp)
    rows = []
    for i in range(h):
        kind = (1, 2, 4)[i % 3] if i else 1
        cur = raw[i]
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        up = raw[i - 1] if i else np.zeros_like(cur)
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        else:  # Paeth
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    if exif is not None:
        data += _chunk(b"eXIf", exif)
    data += _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")
    path.write_bytes(data)


def write_tiff16_rgb(path: pathlib.Path, arr: np.ndarray) -> None:
    """An uncompressed little-endian 16-bit RGB TIFF of (H, W, 3) uint16 ``arr``."""
    h, w, c = arr.shape
    pixels = arr.astype("<u2").tobytes()
    data_offset = 16
    entries = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 3, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, data_offset),
        (277, 3, 1, c),
        (278, 3, 1, h),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    out = b"II*\x00" + struct.pack("<I", data_offset + len(pixels)) + struct.pack("<4H", 16, 16, 16, 0) + pixels
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    path.write_bytes(out + struct.pack("<I", 0))


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    raw = exif.tobytes()
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


def hwc(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) tensor -> float64 (H, W, 3) array."""
    assert t.dim() == 4 and t.shape[:2] == (1, 3), tuple(t.shape)
    return t[0].permute(1, 2, 0).double().numpy()


def check_image_tensor(t: torch.Tensor, h: int, w: int) -> None:
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert tuple(t.shape) == (1, 3, h, w)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def luma(x: torch.Tensor) -> torch.Tensor:
    return (x.double() * LUMA).sum(dim=1, keepdim=True)


def yiq_chroma(x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor([[0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
    return torch.einsum("kc,bchw->bkhw", m, x.double())


def rand_u8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def rng(fresh_seed) -> np.random.Generator:
    return np.random.default_rng(fresh_seed)


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------


def test_load_rgb_png_exact(tmp_path, rng):
    arr = rand_u8(rng, 13, 21, 3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    t = images.load_image(tmp_path / "a.png")
    check_image_tensor(t, 13, 21)
    np.testing.assert_allclose(hwc(t), arr / 255.0, atol=1e-7)
    assert images.load_image(str(tmp_path / "a.png"), device="cpu").device.type == "cpu"


def test_load_long_side(tmp_path, rng):
    Image.fromarray(rand_u8(rng, 30, 80, 3)).save(tmp_path / "wide.png")
    Image.fromarray(rand_u8(rng, 80, 30, 3)).save(tmp_path / "tall.png")
    check_image_tensor(images.load_image(tmp_path / "wide.png", long_side=40), 15, 40)
    check_image_tensor(images.load_image(tmp_path / "tall.png", long_side=160), 160, 60)
    with pytest.raises(ValueError, match="long_side"):
        images.load_image(tmp_path / "wide.png", long_side=0)


def test_jpeg_exif_orientation_6_is_rotated(tmp_path):
    # stored 40 wide x 20 high: left half red, right half blue; top rows of the left half green
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    arr[:6, :20] = (0, 255, 0)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(arr).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    assert Image.open(tmp_path / "rot.jpg").getexif()[EXIF_ORIENTATION] == 6
    t = images.load_image(tmp_path / "rot.jpg")
    check_image_tensor(t, 40, 20)  # rotated 90 degrees clockwise: now 20 wide x 40 high
    out = hwc(t)
    # clockwise rotation: the stored left half (red, green on top) becomes the top half, green at its right
    np.testing.assert_allclose(out[8, 4], (1, 0, 0), atol=0.1)
    np.testing.assert_allclose(out[8, 17], (0, 1, 0), atol=0.1)
    np.testing.assert_allclose(out[32, 10], (0, 0, 1), atol=0.1)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "rot.jpg")), np.float64) / 255
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9), ids=lambda n: f"orientation{n}")
def test_orientations_match_exif_transpose_8_and_16_bit(tmp_path, rng, orientation):
    arr16 = rng.integers(0, 65536, (5, 9, 3)).astype(np.uint16)
    write_png16(tmp_path / "o16.png", arr16, exif=exif_bytes(orientation))
    pil = Image.open(tmp_path / "o16.png")
    assert pil.getexif().get(EXIF_ORIENTATION) == orientation
    expected8 = np.asarray(ImageOps.exif_transpose(pil), np.float64) / 255  # Pillow's own 8-bit decoding
    t16 = images.load_image(tmp_path / "o16.png")
    assert hwc(t16).shape == expected8.shape
    assert np.abs(hwc(t16) - expected8).max() <= 1.01 / 255

    arr8 = rand_u8(rng, 5, 9, 3)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(arr8).save(tmp_path / "o8.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o8.png")), np.float64) / 255
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "o8.png")), expected, atol=1e-7)


def test_greyscale_L(tmp_path, rng):
    arr = rand_u8(rng, 9, 11)
    Image.fromarray(arr).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L"
    out = hwc(images.load_image(tmp_path / "g.png"))
    for c in range(3):
        np.testing.assert_allclose(out[..., c], arr / 255.0, atol=1e-7)


def test_bilevel_mode_1(tmp_path):
    arr = np.zeros((8, 8), bool)
    arr[::2] = True
    Image.fromarray(arr).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    out = hwc(images.load_image(tmp_path / "b.png"))
    np.testing.assert_allclose(out[::2], 1.0)
    np.testing.assert_allclose(out[1::2], 0.0)


def test_rgba_composited_over_white(tmp_path):
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[..., :3] = (200, 40, 10)
    arr[0, :, 3] = (0, 128, 255)
    arr[1, :, 3] = 255
    Image.fromarray(arr, "RGBA").save(tmp_path / "rgba.png")
    out = hwc(images.load_image(tmp_path / "rgba.png"))
    colour = np.array([200, 40, 10]) / 255
    np.testing.assert_allclose(out[0, 0], 1.0, atol=1e-6)  # fully transparent -> white
    np.testing.assert_allclose(out[0, 2], colour, atol=1e-6)  # opaque -> the colour
    a = 128 / 255
    np.testing.assert_allclose(out[0, 1], colour * a + (1 - a), atol=1e-6)
    np.testing.assert_allclose(out[1], np.broadcast_to(colour, (3, 3)), atol=1e-6)


def test_la_composited_over_white(tmp_path):
    arr = np.stack([np.full((2, 2), 50, np.uint8), np.array([[0, 255], [255, 102]], np.uint8)], axis=-1)
    Image.fromarray(arr, "LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    out = hwc(images.load_image(tmp_path / "la.png"))
    np.testing.assert_allclose(out[0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], 50 / 255, atol=1e-6)
    a = 102 / 255
    np.testing.assert_allclose(out[1, 1], 50 / 255 * a + 1 - a, atol=1e-6)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 0, 1, 1, 2, 2])
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = hwc(images.load_image(tmp_path / "p.png"))
    np.testing.assert_allclose(out[0, 0], (1, 0, 0))
    np.testing.assert_allclose(out[0, 1], (0, 1, 0))
    np.testing.assert_allclose(out[1, 3], (0, 0, 1))
    pal.save(tmp_path / "pt.png", transparency=1)  # palette index 1 (green) transparent
    out = hwc(images.load_image(tmp_path / "pt.png"))
    np.testing.assert_allclose(out[0, 0], (1, 0, 0), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], (1, 1, 1), atol=1e-6)
    np.testing.assert_allclose(out[1, 3], (0, 0, 1), atol=1e-6)
    Image.open(tmp_path / "p.png").save(tmp_path / "p.gif")
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "p.gif"))[0, 1], (0, 1, 0))


@pytest.mark.parametrize("name", ["c.tif", "c.jpg"])
def test_cmyk_to_rgb(tmp_path, name):
    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))  # no cyan/black, full magenta + yellow: red
    cmyk.paste((0, 0, 0, 0), (0, 0, 3, 4))  # nothing: white
    cmyk.save(tmp_path / name)
    out = hwc(images.load_image(tmp_path / name))
    np.testing.assert_allclose(out[1, 1], (1, 1, 1), atol=0.03)
    np.testing.assert_allclose(out[1, 4], (1, 0, 0), atol=0.03)


def test_16bit_greyscale_png_keeps_precision(tmp_path):
    values = (np.arange(60, dtype=np.int64) + 30000).astype(np.uint16).reshape(6, 10)  # 1/65535 steps
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    out = hwc(images.load_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(np.round(out[..., 0] * 65535).astype(np.int64), values)
    for c in (1, 2):
        np.testing.assert_array_equal(out[..., c], out[..., 0])
    assert len(np.unique(out[..., 0])) == 60  # an 8-bit decoding would merge them
    np.testing.assert_allclose(out[..., 0], values / 65535.0, atol=1e-7)
    # extremes
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "ext.png")
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "ext.png"))[0, :, 0], (0.0, 1.0))


def test_pillow_decodes_16bit_rgb_png_to_8bit_but_load_image_keeps_16(tmp_path, rng):
    arr = rng.integers(0, 65536, (7, 11, 3)).astype(np.uint16)
    arr[0, :3] = [[30000, 30001, 30002]] * 3  # 1/65535 apart
    write_png16(tmp_path / "rgb16.png", arr)
    pil = Image.open(tmp_path / "rgb16.png")
    assert pil.mode == "RGB"  # what Pillow gives: 8 bit (the high bytes)
    np.testing.assert_array_equal(np.asarray(pil), (arr >> 8).astype(np.uint8))
    out = hwc(images.load_image(tmp_path / "rgb16.png"))
    np.testing.assert_array_equal(np.round(out * 65535).astype(np.int64), arr)
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-7)


def test_16bit_rgba_and_grey_alpha_png(tmp_path, rng):
    rgba = rng.integers(0, 65536, (6, 5, 4)).astype(np.uint16)
    write_png16(tmp_path / "rgba16.png", rgba)
    f = rgba / 65535.0
    expected = f[..., :3] * f[..., 3:] + (1 - f[..., 3:])
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "rgba16.png")), expected, atol=1e-7)
    la = rng.integers(0, 65536, (6, 5, 2)).astype(np.uint16)
    write_png16(tmp_path / "la16.png", la)
    f = la / 65535.0
    grey = f[..., :1] * f[..., 1:] + (1 - f[..., 1:])
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "la16.png")), np.repeat(grey, 3, 2), atol=1e-7)


def test_16bit_rgb_tiff(tmp_path, rng):
    arr = rng.integers(0, 65536, (5, 8, 3)).astype(np.uint16)
    write_tiff16_rgb(tmp_path / "rgb16.tif", arr)
    assert Image.open(tmp_path / "rgb16.tif").mode == "RGB"
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "rgb16.tif")), arr / 65535.0, atol=1e-7)


def test_int32_and_float_modes(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535, 70000]], np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    out = hwc(images.load_image(tmp_path / "i.tif"))[0, :, 0]
    np.testing.assert_allclose(out, (0.0, 32768 / 65535, 1.0, 1.0), atol=1e-7)
    Image.fromarray(np.array([[0.0, 0.25, 1.5, -1.0]], np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_allclose(hwc(images.load_image(tmp_path / "f.tif"))[0, :, 1], (0.0, 0.25, 1.0, 0.0))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        images.load_image(missing)


@pytest.mark.parametrize("content", [b"this is not an image\n" * 20, b""], ids=["garbage", "empty"])
def test_unreadable_file(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="cannot read image") as info:
        images.load_image(bad)
    assert str(bad) in str(info.value)


def test_truncated_png_and_directory(tmp_path, rng):
    Image.fromarray(rand_u8(rng, 64, 64, 3)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read image"):
        images.load_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="cannot read image"):
        images.load_image(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_png(tmp_path):
    img = torch.rand(1, 3, 17, 23)
    saved = images.save_image(img, tmp_path / "out.png")
    assert saved == (tmp_path / "out.png").resolve() and isinstance(saved, pathlib.Path)
    back = images.load_image(saved)
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    # quantisation is round(x * 255)
    np.testing.assert_array_equal(
        np.asarray(Image.open(saved)), (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    )
    # saving what was loaded reproduces the file's pixels exactly
    again = images.save_image(back[0], tmp_path / "again.png")  # (3, H, W) accepted
    np.testing.assert_array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(saved)))


@pytest.mark.parametrize(
    "suffix,tol",
    [(".png", 0.5), (".bmp", 0.5), (".tif", 0.5), (".TIFF", 0.5), (".jpg", 12), (".JPEG", 12), (".webp", 12)],
    ids=["png", "bmp", "tif", "TIFF", "jpg", "JPEG", "webp"],
)
def test_save_formats(tmp_path, suffix, tol):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    img = torch.stack([yy, xx, (yy + xx) / 2]).unsqueeze(0)  # smooth, so lossy formats stay close
    saved = images.save_image(img, tmp_path / f"out{suffix}")
    expected_format = images.SAVE_FORMATS[suffix.lower()]
    with Image.open(saved) as pil:
        assert pil.format == expected_format
    back = images.load_image(saved)
    assert (back - img).abs().max() <= tol / 255 + 1e-6


def test_jpeg_quality_95(tmp_path, monkeypatch):
    seen = {}
    real_save = Image.Image.save

    def spy(self, fp, format=None, **params):
        seen.update(params, format=format)
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", spy)
    images.save_image(torch.rand(3, 8, 8), tmp_path / "q.jpg")
    assert seen["format"] == "JPEG" and seen["quality"] == 95


def test_save_clamps(tmp_path):
    img = torch.tensor([[-1.0, 0.5, 2.0, 0.0]]).expand(3, 1, 4).clone()
    saved = images.save_image(img, tmp_path / "c.png")
    np.testing.assert_array_equal(np.asarray(Image.open(saved))[0, :, 0], (0, 128, 255, 0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_save_refuses_non_finite_pixels(tmp_path, bad):
    img = torch.rand(3, 4, 4)
    img[1, 2, 3] = bad
    with pytest.raises(ValueError, match="1 non-finite values"):
        images.save_image(img, tmp_path / "n.png")
    with pytest.raises(ValueError, match="non-finite"):
        images.to_pil(img)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_bad_shapes_and_suffix(tmp_path):
    with pytest.raises(ValueError, match="batch of 2"):
        images.save_image(torch.rand(2, 3, 4, 4), tmp_path / "b.png")
    with pytest.raises(ValueError):
        images.save_image(torch.rand(1, 4, 4, 4), tmp_path / "c4.png")
    with pytest.raises(ValueError):
        images.save_image(torch.rand(4, 4), tmp_path / "2d.png")
    with pytest.raises(ValueError, match="suffix"):
        images.save_image(torch.rand(3, 4, 4), tmp_path / "x.gifx")
    assert list(tmp_path.iterdir()) == []


def test_save_creates_parents_overwrites_atomically_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    images.save_image(torch.zeros(3, 4, 4), target)
    images.save_image(torch.ones(1, 3, 5, 6), target)  # overwrite
    assert np.asarray(Image.open(target)).shape == (5, 6, 3)
    assert np.asarray(Image.open(target)).min() == 255
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like a plain open(), not mkstemp's 0o600


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    images.save_image(torch.zeros(3, 4, 4), target)
    before = target.read_bytes()

    def boom(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        images.save_image(torch.ones(3, 4, 4), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_refuses_to_overwrite_inputs(tmp_path, monkeypatch, rng):
    (tmp_path / "sub").mkdir()
    inp = tmp_path / "in.png"
    Image.fromarray(rand_u8(rng, 4, 4, 3)).save(inp)
    before = inp.read_bytes()
    img = torch.rand(3, 4, 4)
    with pytest.raises(ValueError) as info:
        images.save_image(img, inp, protected=[inp])
    assert str(inp) in str(info.value)
    monkeypatch.chdir(tmp_path / "sub")
    # the same file through another relative path, the input given relative too, a single path not in a list
    with pytest.raises(ValueError, match=r"\.\./sub/\.\./in\.png") as info:
        images.save_image(img, "../sub/../in.png", protected=("../in.png",))
    assert "../in.png" in str(info.value)
    with pytest.raises(ValueError):
        images.save_image(img, tmp_path / "in.png", protected="../in.png")
    # through a symlink and a hard link
    link = tmp_path / "link.png"
    link.symlink_to(inp)
    with pytest.raises(ValueError):
        images.save_image(img, link, protected=[inp])
    with pytest.raises(ValueError):
        images.save_image(img, inp, protected=[link])
    hard = tmp_path / "hard.png"
    os.link(inp, hard)
    with pytest.raises(ValueError):
        images.save_image(img, hard, protected=[inp])
    assert inp.read_bytes() == before and link.is_symlink()
    # other paths are fine
    out = images.save_image(img, "out.png", protected=[inp, tmp_path / "does-not-exist.png"])
    assert out == (tmp_path / "sub" / "out.png").resolve()
    assert inp.read_bytes() == before


# ---------------------------------------------------------------------------------------------------------------
# resizing
# ---------------------------------------------------------------------------------------------------------------


def test_resize_long_side_shapes():
    assert images.resize_long_side(torch.rand(1, 3, 30, 40), 20).shape == (1, 3, 15, 20)
    assert images.resize_long_side(torch.rand(2, 3, 40, 30), 100).shape == (2, 3, 100, 75)
    assert images.resize_long_side(torch.rand(3, 33, 33), 10).shape == (3, 10, 10)
    assert images.resize_long_side(torch.rand(1, 3, 3, 1000), 10).shape == (1, 3, 1, 10)  # at least 1 pixel
    assert images.resize_long_side(torch.rand(1, 3, 100, 7), 20).shape == (1, 3, 20, 1)  # 1.4 -> 1
    assert images.resize_long_side(torch.rand(1, 3, 100, 9), 10).shape == (1, 3, 10, 1)  # 0.9 -> 1
    assert images.resize_long_side(torch.rand(1, 3, 64, 96), 48).shape == (1, 3, 32, 48)
    with pytest.raises(ValueError):
        images.resize_long_side(torch.rand(1, 3, 4, 4), 0)


def test_resize_size_range_and_errors():
    img = torch.rand(1, 3, 20, 30)
    out = images.resize(img, (37, 11))
    assert out.shape == (1, 3, 37, 11) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # bicubic overshoot is clamped
    edge = torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 1.0
    up = images.resize(edge, (32, 32))
    assert float(up.min()) == 0.0 and float(up.max()) == 1.0
    assert torch.equal(images.resize(img, (20, 30)), img)
    assert images.resize(img[0], [10, 10]).shape == (3, 10, 10)


@pytest.mark.parametrize("bad", [(0, 3), (3,), (2.5, 3), "ab"], ids=["0x3", "3", "2.5x3", "str_ab"])
def test_resize_refuses_bad_sizes(bad):
    with pytest.raises(ValueError):
        images.resize(torch.rand(1, 3, 20, 30), bad)


def test_downscaling_checkerboard_is_antialiased():
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = ((yy + xx) % 2).float().expand(1, 3, 64, 64)
    small = images.resize(board, (8, 8))
    assert (small - 0.5).abs().max() < 0.02  # grey, not aliased black/white
    small = images.resize_long_side(board, 13)
    assert small.shape == (1, 3, 13, 13) and (small - 0.5).abs().max() < 0.05
    aliased = torch.nn.functional.interpolate(board, size=(13, 13), mode="bicubic", align_corners=False)
    assert (aliased - 0.5).abs().max() > 0.3  # what bicubic without antialiasing gives


# ---------------------------------------------------------------------------------------------------------------
# colour preservation
# ---------------------------------------------------------------------------------------------------------------


def test_luminance_transfer_in_gamut():
    result = 0.25 + 0.5 * torch.rand(2, 3, 16, 12)
    content = 0.5 + 0.1 * (torch.rand(2, 3, 16, 12) - 0.5)  # low chroma: result's Y + content's chroma in gamut
    out = images.luminance_transfer(result, content)
    assert out.shape == result.shape and out.dtype == torch.float32
    torch.testing.assert_close(luma(out), luma(result), rtol=0, atol=1e-6)
    torch.testing.assert_close(yiq_chroma(out), yiq_chroma(content), rtol=0, atol=1e-6)
    # BT.601 YCbCr chroma too (Cb, Cr are proportional to B - Y, R - Y)
    torch.testing.assert_close(out.double() - luma(out), content.double() - luma(content), rtol=0, atol=1e-6)


def test_luminance_transfer_keeps_luminance_of_saturated_colours():
    result = torch.rand(1, 3, 20, 20)
    content = torch.rand(1, 3, 20, 20)
    content[..., :5, :] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # saturated red rows
    out = images.luminance_transfer(result, content)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    torch.testing.assert_close(luma(out), luma(result), rtol=0, atol=1e-6)
    # the hue is kept where colours go out of gamut: chroma is scaled, not clipped per channel
    cos = torch.nn.functional.cosine_similarity(yiq_chroma(out), yiq_chroma(content), dim=1)
    chroma_norm = yiq_chroma(out).norm(dim=1)
    assert bool((cos[chroma_norm > 1e-4] > 0.9999).all())


def test_luminance_transfer_resizes_content_and_accepts_3d():
    result = torch.rand(3, 16, 24)
    content = torch.full((1, 3, 32, 48), 0.5)
    content[:, 0] = 0.6
    out = images.luminance_transfer(result, content)
    assert out.shape == (3, 16, 24)
    torch.testing.assert_close(luma(out[None]), luma(result[None]), rtol=0, atol=1e-6)
    # batch-1 content broadcasts over a batch result
    assert images.luminance_transfer(torch.rand(4, 3, 8, 8), torch.rand(1, 3, 8, 8)).shape == (4, 3, 8, 8)
    with pytest.raises(ValueError):
        images.luminance_transfer(torch.rand(4, 3, 8, 8), torch.rand(2, 3, 8, 8))


def mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.double().reshape(3, -1)
    mu = flat.mean(dim=1)
    centred = flat - mu[:, None]
    return mu, centred @ centred.T / flat.shape[1]


def test_mean_cov_matches_statistics():
    result = torch.rand(1, 3, 40, 30)
    mix = torch.tensor([[0.8, 0.3, 0.1], [0.2, 0.5, 0.1], [0.1, 0.4, 0.9]])
    content = torch.einsum("kc,bchw->bkhw", mix, torch.rand(1, 3, 25, 35)) * 0.4 + 0.1  # correlated colours
    out = images.match_color(result, content, "mean_cov", clamp=False)
    assert out.shape == result.shape and out.dtype == torch.float32
    mu_o, cov_o = mean_cov(out)
    mu_c, cov_c = mean_cov(content)
    torch.testing.assert_close(mu_o, mu_c, rtol=0, atol=1e-4)
    torch.testing.assert_close(cov_o, cov_c, rtol=0, atol=1e-4)
    # with the default clamp, in-gamut values are unchanged
    clamped = images.match_color(result, content)
    assert float(clamped.min()) >= 0 and float(clamped.max()) <= 1
    if float(out.min()) >= 0 and float(out.max()) <= 1:
        torch.testing.assert_close(clamped, out)


def test_mean_cov_in_gamut_default_and_batched():
    result = 0.3 + 0.4 * torch.rand(3, 3, 24, 24)
    content = 0.4 + 0.2 * torch.rand(3, 3, 24, 24)
    content[:, 2] = 0.7 * content[:, 0] + 0.1  # strongly correlated channels
    out = images.preserve_colors(result, content, "mean_cov")
    for b in range(3):
        mu_o, cov_o = mean_cov(out[b])
        mu_c, cov_c = mean_cov(content[b])
        torch.testing.assert_close(mu_o, mu_c, rtol=0, atol=1e-4)
        torch.testing.assert_close(cov_o, cov_c, rtol=0, atol=1e-4)
    # a constant result (singular covariance) stays finite
    flat = images.match_color(torch.full((1, 3, 8, 8), 0.3), content[:1])
    assert torch.isfinite(flat).all()
    torch.testing.assert_close(flat.double().mean(dim=(2, 3)), content[:1].double().mean(dim=(2, 3)), rtol=0, atol=1e-4)


def test_histogram_matching_equal_sizes():
    # distinct values (a random permutation of a grid): with ties, the rank order below would be ambiguous
    result = ((torch.rand(2, 3, 500).argsort(dim=2).float() + 0.5) / 500).reshape(2, 3, 20, 25)
    content = torch.rand(2, 3, 20, 25) ** 2
    out = images.match_color(result, content, "histogram")
    assert out.shape == result.shape
    torch.testing.assert_close(
        out.reshape(2, 3, -1).sort(dim=2).values, content.reshape(2, 3, -1).sort(dim=2).values, rtol=0, atol=0
    )
    # ranks of result are kept: the per-channel order is the same
    r_order = result.reshape(2, 3, -1).argsort(dim=2)
    assert bool((out.reshape(2, 3, -1).gather(2, r_order).diff(dim=2) >= 0).all())
    assert torch.equal(images.preserve_colors(result, content, "histogram"), out)


def test_histogram_matching_different_sizes():
    result = torch.rand(1, 3, 30, 30)
    content = torch.rand(1, 3, 10, 17) * 0.5 + 0.25
    out = images.match_color(result[0], content[0], "histogram")
    assert out.shape == (3, 30, 30)
    flat = out.reshape(3, -1)
    c_sorted = content.reshape(3, -1).sort(dim=1).values
    torch.testing.assert_close(flat.min(dim=1).values, c_sorted[:, 0])
    torch.testing.assert_close(flat.max(dim=1).values, c_sorted[:, -1])
    torch.testing.assert_close(flat.double().mean(dim=1), c_sorted.double().mean(dim=1), rtol=0, atol=0.01)


def test_preserve_colors_dispatch_and_errors():
    result, content = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert torch.equal(images.preserve_colors(result, content, "luminance"), images.luminance_transfer(result, content))
    assert torch.equal(
        images.preserve_colors(result, content, "mean_cov"), images.match_color(result, content, "mean_cov")
    )
    with pytest.raises(ValueError, match="luminance.*mean_cov.*histogram"):
        images.preserve_colors(result, content, "ycbcr")
    with pytest.raises(ValueError, match="mean_cov.*histogram"):
        images.match_color(result, content, "luminance")
    with pytest.raises(ValueError):
        images.match_color(torch.rand(1, 1, 8, 8), content)
    # the inputs are not modified
    r0, c0 = result.clone(), content.clone()
    for method in images.COLOR_METHODS:
        images.preserve_colors(result, content, method)
    assert torch.equal(result, r0) and torch.equal(content, c0)


# ---------------------------------------------------------------------------------------------------------------
# Pillow helpers and a real style image
# ---------------------------------------------------------------------------------------------------------------


def test_to_pil_from_pil_round_trip(rng):
    arr = rand_u8(rng, 6, 7, 3)
    t = images.from_pil(Image.fromarray(arr))
    check_image_tensor(t, 6, 7)
    pil = images.to_pil(t)
    assert pil.mode == "RGB" and pil.size == (7, 6)
    np.testing.assert_array_equal(np.asarray(pil), arr)
    np.testing.assert_array_equal(np.asarray(images.to_pil(t[0])), arr)
    assert images.from_pil(Image.new("L", (3, 2), 255)).shape == (1, 3, 2, 3)


def test_candy_style_image():
    candy = STYLES / "candy.jpg"
    if not candy.exists():
        pytest.skip(f"{candy} is not there (the shared data folder is absent)")
    img = images.load_image(candy)
    assert img.dim() == 4 and img.shape[:2] == (1, 3) and min(img.shape[-2:]) > 16
    assert img.dtype == torch.float32 and float(img.min()) >= 0 and float(img.max()) <= 1
    assert float(img.std()) > 0.05  # a real picture, not a flat image
    small = images.load_image(candy, long_side=64)
    assert max(small.shape[-2:]) == 64


def test_psnr_conventions():
    from perceptual_kernels.api import metrics

    a = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    assert metrics.psnr(a, a) == float("inf")
    assert abs(metrics.psnr(a, a + 0.1) - 20.0) < 1e-9  # MSE 0.01
    # Y = 16 + 219 * gray on 0-255 for gray RGB: a 0.1 grey step is 21.9 on the Y scale
    assert abs(metrics.psnr_y(a, a + 0.1) - 10 * math.log10(255**2 / 21.9**2)) < 1e-6
    b = a.clone()
    b[..., 0, :] = 0  # a border row differs: shaving 1 pixel removes it
    assert metrics.psnr_y(a, b, shave=1) == float("inf")
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(a, a[..., :4])
