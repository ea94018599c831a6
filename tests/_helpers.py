"""Shared test helpers (imported as ``from _helpers import ...``; tests/ is on pytest's pythonpath): the device,
input layouts, dtype tolerances, the backend / dtype sweeps, the shared test images, ``make_input`` and
``assert_close``. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import pathlib
import re
import types
import warnings
from collections.abc import Iterable

import pytest
import torch

DEVICE = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
ON_GPU = DEVICE.type == "cuda"
LAYOUTS = ("contiguous", "channels_last", "sliced")
# fp16 / bf16 kernels are checked on a GPU; the CPU interpreter pass covers fp32 (and the fp16/bf16 kernel tests)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16) if ON_GPU else (torch.float32,)
# (rtol, atol) against the float64 reference, relative to the reference's magnitude
TOLERANCES = {
    torch.float32: (2e-4, 2e-5),
    torch.float16: (1e-2, 2e-3),
    torch.bfloat16: (5e-2, 1e-2),
    torch.float64: (1e-10, 1e-12),
}
DTYPE_IDS = {
    torch.float64: "fp64",
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.uint8: "uint8",
    torch.bool: "bool",
}


def dtype_id(dtype: torch.dtype) -> str:
    """Short test id of a dtype: ``fp32``, ``fp16``, ``bf16``, ``fp64`` (``ids=dtype_id``)."""
    return DTYPE_IDS.get(dtype, str(dtype).removeprefix("torch."))


def shape_id(shape: tuple[int, ...]) -> str:
    """Test id of a shape: ``(3, 17, 7, 31)`` -> ``3x17x7x31`` (``ids=shape_id``)."""
    return "x".join(map(str, shape))


def case_id(value: object) -> str | None:
    """``ids=`` callable for mixed parameters: dtypes and shapes get their short ids, anything else pytest's own."""
    if isinstance(value, torch.dtype):
        return dtype_id(value)
    if isinstance(value, (tuple, torch.Size)) and all(isinstance(n, int) for n in value):
        return shape_id(value)
    return None


def text_id(text: str) -> str:
    """A message or any text as an id without spaces or brackets: ``"size must be >= 1"`` -> ``size_must_be_1``."""
    return re.sub(r"[^\w.=+-]+", "_", str(text)).strip("_") or "empty"


def value_id(value: object) -> str:
    """A short id of a parameter value: dtypes and int shapes as in ``case_id``, ``()`` as ``empty``, text as in
    ``text_id``, anything else its ``repr`` made id-safe."""
    if (known := case_id(value)) is not None:
        return known or "empty"
    if isinstance(value, str):
        return text_id(value) if value else "empty_str"
    return text_id(repr(value))


def kwargs_id(kwargs: dict) -> str:
    """``{"channels": 0, "output": "relu"}`` -> ``channels=0-output=relu`` (``{}`` -> ``no_kwargs``)."""
    return "-".join(f"{key}={value_id(value)}" for key, value in kwargs.items()) or "no_kwargs"


def call_id(fn) -> str:
    """The function a ``lambda`` test case calls: ``lambda p: gatys.stylize(p, p, lr=0)`` -> ``gatys.stylize``."""
    names = fn.__code__.co_names
    if len(names) > 1 and isinstance(fn.__globals__.get(names[0]), types.ModuleType):
        return f"{names[0]}.{names[1]}"
    return names[0] if names else fn.__name__


def unique_ids(ids: Iterable[str]) -> list[str]:
    """The ids, a repeated one numbered from its second occurrence on (``a``, ``a-2``, ``a-3``)."""
    seen: dict[str, int] = {}
    out = []
    for name in ids:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


# compiled backends: "cpu" runs CPU tensors; "cuda" is swept only where a GPU is (DEVICE is cuda then)
COMPILED_BACKEND = "cuda" if ON_GPU else "cpu"
KERNEL_BACKENDS = [pytest.param("triton", marks=pytest.mark.triton, id="triton"), COMPILED_BACKEND]
# (backend, dtype) sweeps: the compiled kernels take fp16 / bf16 on either device; the Triton interpreter pass
# sweeps fp32 only (its fp16 / bf16 coverage is test_half_precision), a GPU run sweeps every dtype
COMPILED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
KERNEL_BACKEND_DTYPES = [
    pytest.param("triton", dtype, marks=pytest.mark.triton, id=f"triton-{dtype_id(dtype)}") for dtype in KERNEL_DTYPES
] + [pytest.param(COMPILED_BACKEND, dtype, id=f"{COMPILED_BACKEND}-{dtype_id(dtype)}") for dtype in COMPILED_DTYPES]
# the team's test images (../shared/data beside the checkout, or PK_SHARED_DATA); tests skip when absent
SHARED_DATA = pathlib.Path(
    os.environ.get("PK_SHARED_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
)


def shared_image(relative: str) -> pathlib.Path:
    """Path of a shared test image, or skip the test saying where it was looked for."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared test image {path} not present (set PK_SHARED_DATA)")
    return path


def make_input(
    shape: tuple[int, ...],
    layout: str = "contiguous",
    dtype: torch.dtype = torch.float32,
    device: torch.device = DEVICE,
    scale: float = 1.0,
) -> torch.Tensor:
    """Random normal tensor of ``shape`` in a given memory layout: "contiguous", "channels_last" or "sliced"
    (a strided view into a bigger tensor: every other channel, an inner spatial window)."""
    if layout == "sliced":
        B, C, *spatial = shape
        big = (torch.randn(B, 2 * C, *(n + 3 for n in spatial), device=device) * scale).to(dtype)
        view = big[:, ::2]
        for dim, n in enumerate(spatial, start=2):
            view = view.narrow(dim, 1, n)
        return view
    x = (torch.randn(shape, device=device) * scale).to(dtype)
    if layout == "channels_last" and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    """``|actual - expected| <= atol * max|expected| + rtol * |expected|`` elementwise, NaNs must match."""
    rtol, atol = TOLERANCES[dtype]
    actual64, expected64 = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual64.shape == expected64.shape, f"{what}: shape {actual64.shape} != {expected64.shape}"
    nan_a, nan_e = actual64.isnan(), expected64.isnan()
    assert torch.equal(nan_a, nan_e), f"{what}: NaN positions differ"
    actual64, expected64 = actual64[~nan_e], expected64[~nan_e]
    if expected64.numel() == 0:
        return
    scale = expected64.abs().max().clamp_min(1e-30)
    err = (actual64 - expected64).abs()
    bound = atol * scale + rtol * expected64.abs()
    worst = (err - bound).argmax()
    assert bool((err <= bound).all()), (
        f"{what}: max error {err.max():.3e} (at {worst.item()}: got {actual64[worst]:.6e}, "
        f"expected {expected64[worst]:.6e}), scale {scale:.3e}, dtype {dtype}"
    )


def tiny_train_config(**overrides: object):
    """A Johnson ``TrainConfig`` small enough for a CPU test (random VGG weights, 32 px crops, no workers)."""
    from perceptual_kernels.api import johnson

    base = dict(
        iterations=6, batch_size=2, crop=32, vgg_weights="random", workers=0, checkpoint_every=3, log_every=1, lr=1e-2
    )
    return johnson.TrainConfig(**{**base, **overrides})


def train_style_quietly(data, styles, out, *, resume: bool = False, **overrides: object):
    """``johnson.train_style`` on the CPU with :func:`tiny_train_config` (``overrides``), no bar, no warnings
    (random VGG weights, deliberately unreadable files)."""
    from perceptual_kernels.api import johnson

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = tiny_train_config(**overrides)
        return johnson.train_style(data, styles, out, config, resume=resume, device="cpu", progress=False)
