"""Argument checks shared by the API functions and the CLI.

Each check returns the value in its canonical type or raises ``ValueError`` / ``TypeError`` naming the argument,
so the functions can run all of them before any work starts.
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch

#: Seeds are integers in [0, SEED_MAX] (they are combined with step and epoch numbers into generator seeds).
SEED_MAX = 2**32 - 1

PathLike = str | os.PathLike


def integer(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum] (bounds optional); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (
            f">= {minimum}" if maximum is None else f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        )
        raise ValueError(f"{name} must be an integer {bounds}, got {value}")
    return value


def number(name: str, value: object, minimum: float | None = None, *, positive: bool = False) -> float:
    """``value`` as a finite float, >= ``minimum`` (or > 0 with ``positive``); NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value:g}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value:g}")
    return value


#: Loss weights multiply float32 losses: larger values overflow to inf.
MAX_LOSS_WEIGHT = float(torch.finfo(torch.float32).max)


def loss_weight(name: str, value: object) -> float:
    """A loss weight: finite, >= 0 and inside the float32 range of the losses."""
    weight = number(name, value, 0.0)
    if weight > MAX_LOSS_WEIGHT:
        raise ValueError(
            f"{name} must be at most {MAX_LOSS_WEIGHT:.3g} (the float32 range of the losses), got {weight:g}"
        )
    return weight


def flag(name: str, value: object) -> bool:
    """A bool option (not an int or a string that would only look true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


def seed(value: object, name: str = "seed") -> int:
    return integer(name, value, 0, SEED_MAX)


def callback(value: object, name: str = "callback") -> object:
    """A callable or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")
    return value


def weights(name: str, values: Sequence[object]) -> list[float]:
    """Mixing weights: finite, non-negative and with a positive sum."""
    out = [number(f"{name}[{i}]", v, 0.0) for i, v in enumerate(values)]
    if not out or sum(out) <= 0:
        raise ValueError(f"{name} must not be empty or all zero, got {out}")
    return out


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    """True when a and b are one file (hard links and symlinks included), or the same path when one is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(str(a.resolve())) == os.path.normcase(str(b.resolve()))


def output_path(
    name: str,
    path: object,
    protected: Iterable[PathLike | None] = (),
    suffixes: Iterable[str] | None = None,
    *,
    folder: bool = False,
) -> pathlib.Path:
    """Check that ``path`` can be written before any work: a known suffix (files), not a folder (files) or not a
    file (``folder=True``), not the same file as any ``protected`` input (hard links included), and its nearest
    existing ancestor a writable folder (missing folders are created when writing). Returns the resolved path."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{name} must be a non-empty path, got {path!r}")
    target = pathlib.Path(os.fspath(path)).expanduser().resolve()
    if folder:
        if target.exists() and not target.is_dir():
            raise ValueError(f"{name} {path} is a file, expected a folder")
    else:
        if target.is_dir():
            raise ValueError(f"{name} {path} is a folder, expected a file path")
        if suffixes is not None and target.suffix.lower() not in set(suffixes):
            raise ValueError(
                f"{name} {path} has an unsupported suffix {target.suffix!r}; use one of "
                f"{', '.join(sorted(set(suffixes)))}"
            )
    for q in protected:
        if q is not None and _same_file(target, pathlib.Path(os.fspath(q)).expanduser()):
            raise ValueError(f"{name} {path} is the same file as the input {q}; choose another path")
    ancestor = target if folder else target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{name} {path} cannot be created: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path} cannot be written: the folder {ancestor} is not writable")
    return target


def input_folder(name: str, path: object) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{name} must be a non-empty path, got {path!r}")
    p = pathlib.Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{name} {path} does not exist")
    if not p.is_dir():
        raise ValueError(f"{name} {path} is a file, expected a folder of images")
    return p


def _load_failure(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load`` (without torch's advice to retry with weights_only=False)."""
    text = str(exc)
    for line in text.splitlines():
        if "unsupported GLOBAL" in line or "Unsupported global" in line:
            return (
                f"it holds Python objects other than tensors ({line.strip()}); it was not loaded, since "
                f"loading it could run code"
            )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "weights_only" in first or "Weights only" in first:
        return "it holds Python objects other than tensors; it was not loaded, since loading it could run code"
    return first.split(". ")[0]


def load_torch_file(path: PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ValueError saying ``path`` is not a valid ``what``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a valid {what}: {_load_failure(exc)}") from exc
