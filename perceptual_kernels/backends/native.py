"""The compiled extension ``perceptual_kernels._C`` (C++ CPU and CUDA kernels from ``csrc/``), if it was built.

The package works without it; :func:`load` returns the module or None and :data:`LOAD_ERROR` says why not.
"""
from __future__ import annotations

import importlib
from types import ModuleType

LOAD_ERROR: str | None = None
_module: ModuleType | None = None
_tried = False


def load() -> ModuleType | None:
    """Import ``perceptual_kernels._C`` once; on failure remember the reason instead of raising."""
    global _module, _tried, LOAD_ERROR
    if not _tried:
        _tried = True
        try:
            _module = importlib.import_module("perceptual_kernels._C")
        except ImportError as exc:
            LOAD_ERROR = ("the compiled extension perceptual_kernels._C is not built "
                          f"(reinstall without PERCEPTUAL_KERNELS_NO_EXT; import said: {exc})")
        except Exception as exc:  # a torch version mismatch surfaces as OSError / RuntimeError
            LOAD_ERROR = f"perceptual_kernels._C failed to load ({type(exc).__name__}: {exc})"
    return _module


def unavailable_reason(device_type: str) -> str | None:
    """None when ``_C`` provides kernels for ``device_type`` ("cpu" / "cuda"), else the reason."""
    module = load()
    if module is None:
        return LOAD_ERROR
    if device_type not in getattr(module, "DEVICES", ()):
        return f"perceptual_kernels._C was built without {device_type} kernels"
    return None
