"""Argument checks shared by the public ops. Every error names the argument and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy
import torch

from ._reduction import REDUCTIONS
from .backends.interface import CRITERIA, TV_KINDS

NORMALIZATIONS = ("chw", "hw", "none")
ACTIVATIONS = (None, "relu")


def floating_tensor(name: str, value: object, ndims: tuple[int, ...]) -> torch.Tensor:
    """``value`` must be a floating-point tensor with one of ``ndims`` dimensions and no zero-size dimension."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if value.dim() not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(
            f"{name} must not be empty (zero batch, channels or spatial size), got shape {tuple(value.shape)}"
        )
    return value


def same_device(x: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, other in others.items():
        if other is not None and other.device != x.device:
            raise ValueError(f"{name} is on {other.device} but x is on {x.device}; move them to one device")


def choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def reduction(value: object) -> str:
    """A loss reduction name, one of :data:`REDUCTIONS`."""
    return choice("reduction", value, REDUCTIONS)


def tv_kind(value: object) -> str:
    """A total-variation kind name, one of :data:`TV_KINDS`."""
    return choice("kind", value, TV_KINDS)


def criterion(value: object) -> str:
    """A content / style loss criterion name, one of :data:`~perceptual_kernels.backends.interface.CRITERIA`."""
    return choice("criterion", value, CRITERIA)


def real_number(name: str, value: object, *, positive: bool = False) -> float:
    """A Python or NumPy real scalar (not a bool, not a tensor) that is finite (and > 0 if ``positive``)."""
    if isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a real number (Python or NumPy scalar), got a Tensor; "
            "multiply the result by a tensor to weight it"
        )
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    # comparisons rather than math.isfinite: they also work on the symbolic floats of torch.compile(dynamic=True)
    if value != value or value in (math.inf, -math.inf) or (positive and value <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value}")
    return value


def fits_accumulation(name: str, value: float, dtype: torch.dtype) -> float:
    """``value`` must stay a finite normal number in the kernels' accumulation dtype (float32 unless ``dtype`` is
    float64): an ``eps`` of 1e-50 would silently become 0 (subnormals too, where the GPU flushes them), a Gram
    scale of 1e50 inf."""
    f32 = torch.finfo(torch.float32)
    if dtype != torch.float64 and not f32.smallest_normal <= abs(value) <= f32.max:
        raise ValueError(
            f"{name} = {value:g} is not representable in float32 (the accumulation dtype of {dtype} "
            "inputs) as a normal number; use a magnitude in [1.2e-38, 3.4e38] or float64 inputs"
        )
    return value


def as_4d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, N) feature maps become (B, C, 1, N) views; (B, C, H, W) pass through."""
    return x.unsqueeze(2) if x.dim() == 3 else x


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def normalization(normalize: object) -> str | float:
    """``normalize`` must be one of NORMALIZATIONS or a finite positive divisor."""
    if isinstance(normalize, str):
        return choice("normalize", normalize, NORMALIZATIONS)
    return real_number("normalize", normalize, positive=True)


def floating_dtype(name: str, dtype: object) -> torch.dtype | None:
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"{name} must be a floating torch.dtype or None, got {dtype!r}")
    return dtype


def gram_scale(normalize: object, C: int, M: int) -> float:
    """``1/s`` for ``normalize`` = "chw" (s = C*M), "hw" (s = M), "none" (s = 1) or a positive divisor s."""
    if isinstance(normalize, str):
        s = {"chw": C * M, "hw": M, "none": 1}.get(normalize)
        if s is None:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS} or a positive number, got {normalize!r}")
        return 1.0 / s
    return 1.0 / real_number("normalize", normalize, positive=True)


def index_tensor(name: str, index: object, batch: int, rows: int, device: torch.device) -> torch.Tensor:
    """``index`` must be an integer (batch,) tensor on ``device`` with values in [0, rows); returns int64.

    The range check reads the values (a host sync on CUDA) in eager mode; under ``torch.compile`` it becomes an
    asynchronous device-side assertion.
    """
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64, got {type(index).__name__}")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype (int64), got {index.dtype}")
    if index.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one row per sample), got {tuple(index.shape)}")
    if index.device != device:
        raise ValueError(f"{name} is on {index.device} but x is on {device}; move them to one device")
    index = index.long()
    if index.device.type == "meta":  # shape propagation: there are no values to check
        pass
    elif torch.compiler.is_compiling():
        torch._assert_async(((index >= 0) & (index < rows)).all(), f"{name} out of range [0, {rows})")
    else:
        low, high = torch.stack(torch.aminmax(index)).tolist()  # one host sync
        if low < 0 or high >= rows:
            raise ValueError(f"{name} values must lie in [0, {rows}), got min {low}, max {high}")
    return index.contiguous()
