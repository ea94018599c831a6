"""``perceptual_kernels.info()``: versions, devices, backends and the backend each op runs on."""

from __future__ import annotations

import platform

import torch

from . import __version__
from .backends import BACKENDS, BackendUnavailableError, native, select, unavailable_reason
from .functional import __all__ as OPS


def info(print_report: bool = True) -> dict:
    """Collect (and print) what this installation can run. Returns the report as a dict."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    report: dict = {
        "perceptual_kernels": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "backends": {},
        "ops": {},
    }
    module = native.load()
    report["extension"] = {
        "built": module is not None,
        "error": native.LOAD_ERROR,
        "built_against_torch": getattr(module, "TORCH_VERSION", None),
        "cuda_arch_list": getattr(module, "CUDA_ARCH_LIST", None) or None,
        "ops": {device: native.provided_ops(device) for device in getattr(module, "DEVICES", ())},
    }
    for device in devices:
        report["backends"][device.type] = {
            name: unavailable_reason(name, device, torch.float32) or "available" for name in BACKENDS
        }
        try:
            chosen = select(device, torch.float32)
        except BackendUnavailableError as exc:
            chosen = f"error: {exc}"
        report["ops"][device.type] = {op: chosen for op in OPS}
    if print_report:
        for key in ("perceptual_kernels", "python", "torch", "triton", "cuda", "gpu", "float32_matmul_precision"):
            print(f"{key:>26}: {report[key]}")
        ext = report["extension"]
        if ext["built"]:
            print(
                f"{'extension _C':>26}: built against torch {ext['built_against_torch']}, "
                f"CUDA architectures: {ext['cuda_arch_list'] or 'none (CPU only)'}"
            )
            for device, ops in ext["ops"].items():
                print(f"{'_C ' + device + ' kernels':>26}: {', '.join(ops) or 'none'}")
        else:
            print(f"{'extension _C':>26}: not loaded ({ext['error']})")
        for device, status in report["backends"].items():
            print(f"backends for {device} float32 tensors:")
            for name, state in status.items():
                print(f"  {name:>10}: {state}")
            ops = report["ops"][device]
            print(f"  ops on {device} float32 run on: " + ", ".join(f"{op} -> {b}" for op, b in ops.items()))
    return report
