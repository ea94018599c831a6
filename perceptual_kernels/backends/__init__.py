"""Backend registry and dispatch: which implementation runs an op for a given device and dtype.

Order when nothing is forced: CUDA tensors ``cuda`` > ``triton`` > ``reference``; CPU tensors ``cpu`` >
``reference`` (``triton`` runs CPU tensors only under ``TRITON_INTERPRET=1`` and only when asked for).
Force one with :func:`use_backend` or the environment variable ``PERCEPTUAL_KERNELS_BACKEND``; a forced
backend that cannot run raises :class:`BackendUnavailableError` with the reason, never falls back silently.
Inside ``torch.func`` transforms (grad, vmap, jacrev, ...) the automatic choice is ``reference``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections.abc import Iterator

import torch

from . import interface

BACKENDS = ("reference", "triton", "cpu", "cuda")
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FLOAT64_BACKENDS = ("cpu",)  # kernel backends that also take float64 (gradcheck)
_BUILTIN_MODULES = {  # kernel modules of the built-in backends, imported on first use
    "triton": "perceptual_kernels.backends.triton",
    "cpu": "perceptual_kernels.backends.compiled",
    "cuda": "perceptual_kernels.backends.compiled",
}


@dataclasses.dataclass(frozen=True)
class _Registered:
    kernels: object
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]


_forced: list[str] = []  # stack of use_backend() choices, innermost last
_kernel_modules: dict[str, object] = {}
_import_errors: dict[str, str] = {}
_registered: dict[str, _Registered] = {}  # backends added by register_backend()


class BackendUnavailableError(RuntimeError):
    """A backend was requested for a device / dtype it cannot run on."""


def names() -> tuple[str, ...]:
    """Every backend name: the built-in :data:`BACKENDS`, then the ones added by :func:`register_backend`."""
    return BACKENDS + tuple(_registered)


def _check_name(name: str) -> str:
    if name not in BACKENDS and name not in _registered:
        raise ValueError(f"backend must be one of {names()}, got {name!r}")
    return name


def register_backend(
    name: str,
    kernels: object,
    *,
    devices: tuple[str, ...] = ("cpu",),
    dtypes: tuple[torch.dtype, ...] = KERNEL_DTYPES,
) -> None:
    """Add a kernel backend: ``kernels`` implements :class:`~perceptual_kernels.backends.interface.KernelBackend`
    (a module or object with all its functions) for tensors of ``devices`` and ``dtypes``. It runs when forced
    (:func:`use_backend`), never by the automatic choice. Registering a name again replaces it;
    :func:`unregister_backend` removes it.
    """
    if not isinstance(name, str) or not name or name in BACKENDS:
        raise ValueError(f"name must be a new backend name (not one of {BACKENDS}), got {name!r}")
    missing = interface.missing_functions(kernels)
    if missing:
        raise TypeError(f"kernels must implement the kernel interface; missing: {', '.join(missing)}")
    _registered[name] = _Registered(kernels, tuple(devices), tuple(dtypes))
    _kernel_modules[name] = kernels


def unregister_backend(name: str) -> None:
    """Remove a backend added by :func:`register_backend`."""
    if name not in _registered:
        raise ValueError(f"name must be a backend added by register_backend ({tuple(_registered)}), got {name!r}")
    del _registered[name], _kernel_modules[name]


def forced_backend() -> str | None:
    """The backend forced by :func:`use_backend` (innermost) or ``PERCEPTUAL_KERNELS_BACKEND``, else None."""
    if _forced:
        return _forced[-1] or None
    env = os.environ.get("PERCEPTUAL_KERNELS_BACKEND", "").strip()
    if env and env not in BACKENDS:
        raise ValueError(
            f"the environment variable PERCEPTUAL_KERNELS_BACKEND must be one of {BACKENDS} (or unset), got {env!r}"
        )
    return env or None


def _in_functorch_transform() -> bool:
    """True inside a ``torch.func`` transform (grad, vmap, jacrev, jvp, ...) in eager mode: the kernels' custom ops
    have no functorch rules there, the plain-torch reference has them all."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Run the ops inside the ``with`` block on backend ``name`` (None: automatic choice).

    >>> with perceptual_kernels.use_backend("reference"):
    ...     loss = perceptual_kernels.style_loss(x, target)
    """
    _forced.append(_check_name(name) if name is not None else "")
    try:
        yield
    finally:
        _forced.pop()


def kernels(name: str) -> interface.KernelBackend:
    """The kernel functions of backend ``name`` (a built-in one is imported on first use)."""
    if name not in _kernel_modules:
        _kernel_modules[name] = importlib.import_module(_BUILTIN_MODULES[name])
    return _kernel_modules[name]  # type: ignore[return-value]


def _triton_import_error() -> str | None:
    if "triton" not in _import_errors:
        try:
            kernels("triton")
            _import_errors["triton"] = ""
        except ImportError as exc:
            _import_errors["triton"] = f"triton is not importable ({exc})"
    return _import_errors["triton"] or None


@torch.compiler.assume_constant_result
def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when backend ``name`` can run tensors of ``device`` / ``dtype``, else a sentence saying why not."""
    if _check_name(name) == "reference":
        return None
    if name in _registered:
        entry = _registered[name]
        if device.type not in entry.devices or dtype not in entry.dtypes:
            return f"the {name} backend runs {entry.devices} tensors of {entry.dtypes}, got {device.type} {dtype}"
        return None
    supported = KERNEL_DTYPES + ((torch.float64,) if name in FLOAT64_BACKENDS else ())
    if dtype not in supported:
        names = ", ".join(str(d).removeprefix("torch.") for d in supported)
        return f"the {name} backend supports {names}, got {dtype}"
    if name in ("cpu", "cuda") and device.type != name:
        return f"the {name} backend runs {name} tensors, got a {device.type} tensor"
    if name == "triton":
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
            return "triton runs CPU tensors only under TRITON_INTERPRET=1 (set before triton is imported)"
        if device.type not in ("cpu", "cuda"):
            return f"triton runs cuda tensors, got a {device.type} tensor"
        return _triton_import_error()
    from . import native

    return native.unavailable_reason(name)


def select(device: torch.device, dtype: torch.dtype) -> str:
    """The backend an op on ``device`` / ``dtype`` runs on now (forced one, or the first available)."""
    forced = forced_backend()
    if _in_functorch_transform():
        if forced not in (None, "reference"):
            raise BackendUnavailableError(
                f"backend {forced!r} cannot run this op: inside a torch.func transform (grad, vmap, jacrev, ...) "
                "only the reference backend runs; force 'reference' or none"
            )
        return "reference"
    if forced:
        reason = unavailable_reason(forced, device, dtype)
        if reason:
            raise BackendUnavailableError(f"backend {forced!r} cannot run this op: {reason}")
        return forced
    for name in AUTO_ORDER.get(device.type, ("reference",)):
        if unavailable_reason(name, device, dtype) is None:
            return name
    return "reference"
