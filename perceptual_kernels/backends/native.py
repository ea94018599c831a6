"""The compiled extension ``perceptual_kernels._C`` (C++ CPU and CUDA kernels from ``csrc/``), if it was built.

The package works without it: :func:`load` returns the module or None, and :data:`LOAD_ERROR` says why not.
Before importing ``_C`` the torch version it was built against (``_build_info.json``, written by setup.py) is
compared with the running torch: a mismatch is reported and the extension is not loaded (an extension built
against another torch can crash the process on import instead of raising).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import pathlib
import warnings
from types import ModuleType

import torch

BUILD_INFO_PATH = pathlib.Path(__file__).resolve().parents[1] / "_build_info.json"
LOAD_ERROR: str | None = None
_module: ModuleType | None = None
_tried = False
_warned = False


def build_info() -> dict | None:
    """What setup.py recorded about the build of ``_C`` (torch version, CUDA, architectures), or None."""
    try:
        return json.loads(BUILD_INFO_PATH.read_text())
    except (OSError, ValueError):
        return None


def rebuild_command() -> str:
    """The command that rebuilds ``_C`` for the way this package was installed (editable or not)."""
    try:
        recorded = importlib.metadata.distribution("perceptual-kernels").read_text("direct_url.json")
        direct_url = json.loads(recorded) if recorded else {}
    except (importlib.metadata.PackageNotFoundError, ValueError):
        direct_url = {}
    source = direct_url.get("url", "").removeprefix("file://")
    if direct_url.get("dir_info", {}).get("editable"):
        return f"pip install --no-build-isolation -e {source or '.'}"
    if source:
        return f"pip install --no-build-isolation --force-reinstall --no-deps {source}"
    return (
        "pip install --no-build-isolation --force-reinstall --no-deps --no-binary perceptual-kernels perceptual-kernels"
    )


def _version_mismatch(info: dict | None) -> str | None:
    if info is None:
        return None
    if info.get("torch") != torch.__version__:
        return (
            f"perceptual_kernels._C was built against torch {info.get('torch')} but torch {torch.__version__} "
            f"is running; rebuild it ({rebuild_command()}) to use the cpu/cuda backends"
        )
    return None


def load() -> ModuleType | None:
    """Import ``perceptual_kernels._C`` once (registering ``torch.ops.pk_native``); on failure remember why."""
    global _module, _tried, LOAD_ERROR
    if not _tried:
        _tried = True
        LOAD_ERROR = _version_mismatch(build_info())
        if LOAD_ERROR is None:
            try:
                _module = importlib.import_module("perceptual_kernels._C")
            except ImportError as exc:
                LOAD_ERROR = (
                    "the compiled extension perceptual_kernels._C is not built "
                    f"(reinstall without PERCEPTUAL_KERNELS_NO_EXT; import said: {exc})"
                )
            except Exception as exc:  # a mismatched build can surface as OSError / RuntimeError
                LOAD_ERROR = f"perceptual_kernels._C failed to load ({type(exc).__name__}: {exc})"
        if _module is not None:  # no _build_info.json (a copied build): the module knows its torch too
            LOAD_ERROR = _version_mismatch({"torch": getattr(_module, "TORCH_VERSION", None)})
            if LOAD_ERROR is not None:
                _module = None
    return _module


def _warn_unusable_build() -> None:
    """Warn once per process when a built ``_C`` cannot be used (typically: torch was upgraded after the build),
    so the ops silently running on the slower backends is never a surprise. A pure-Python install (no ``_C``
    file) does not warn."""
    global _warned
    if _warned:
        return
    _warned = True  # decided once: the file lookup below is not repeated on every op
    if importlib.util.find_spec("perceptual_kernels._C") is None:
        return
    warnings.warn(
        f"{LOAD_ERROR}. Until then the ops run on the reference / Triton backends (slower).",
        RuntimeWarning,
        stacklevel=3,
    )


def unavailable_reason(device_type: str) -> str | None:
    """None when ``_C`` provides kernels for ``device_type`` ("cpu" / "cuda"), else the reason (a built ``_C``
    that cannot be used also warns, once per process)."""
    module = load()
    if module is None:
        _warn_unusable_build()
        return LOAD_ERROR
    if device_type not in getattr(module, "DEVICES", ()):
        return f"perceptual_kernels._C was built without {device_type} kernels"
    return None


def provided_ops(device_type: str) -> list[str]:
    """The ``torch.ops.pk_native`` ops that have a ``device_type`` kernel registered (empty without ``_C``)."""
    if unavailable_reason(device_type):
        return []
    key = {"cpu": "CPU", "cuda": "CUDA"}[device_type]
    names = [
        schema.name.split("::", 1)[1]
        for schema in torch._C._jit_get_all_schemas()
        if schema.name.startswith("pk_native::")
    ]
    return sorted(n for n in names if torch._C._dispatch_has_kernel_for_dispatch_key(f"pk_native::{n}", key))
