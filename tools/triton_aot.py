"""Compile the Triton kernels for a GPU architecture on a machine without a GPU (development tool).

:func:`capture_launches` runs a launcher (``gram_forward`` etc.) on CPU tensors with the GPU launch configuration
but records each ``kernel[grid](...)`` call instead of running it; :func:`compile_for` then compiles a recorded
call for ``sm_XX`` and reads the register / spill report of the cubin. Used by the tests (every kernel variant
must compile for sm_80 and sm_90) and by ``python -m tools.triton_resources``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from perceptual_kernels.backends.interface import TV_KINDS
from perceptual_kernels.backends.triton import content, gram, instance_norm, lpips, tv

_PTR_TYPES = {
    torch.float32: "*fp32",
    torch.float16: "*fp16",
    torch.bfloat16: "*bf16",
    torch.int64: "*i64",
    torch.int32: "*i32",
    torch.float64: "*fp64",
}


@dataclass
class Launch:
    kernel: triton.JITFunction
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def capture_launches() -> Iterator[list[Launch]]:
    """Inside the block, ``jit_fn[grid](*args, **kwargs)`` records a :class:`Launch` instead of launching."""
    launches: list[Launch] = []
    original = triton.JITFunction.__getitem__

    def record(self, grid):
        return lambda *args, **kwargs: launches.append(Launch(self, args, kwargs))

    triton.JITFunction.__getitem__ = record
    try:
        yield launches
    finally:
        triton.JITFunction.__getitem__ = original


def _arg_type(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return _PTR_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type kernel argument {value!r}")


def compile_for(launch: Launch, arch: int) -> dict:
    """Compile ``launch`` for ``sm_<arch>``; returns name, registers, spill stores/loads, shared memory bytes."""
    names = launch.kernel.arg_names
    options = {k: launch.kwargs[k] for k in ("num_warps", "num_stages") if k in launch.kwargs}
    constexprs = {k: v for k, v in launch.kwargs.items() if k not in options}
    signature = {name: _arg_type(value) for name, value in zip(names, launch.args)}
    signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    report = {
        "kernel": launch.kernel.__name__,
        "arch": f"sm_{arch}",
        "constexprs": constexprs,
        **options,
        "shared_bytes": compiled.metadata.shared,
    }
    report.update(_resource_usage(compiled.asm["cubin"]))
    return report


def _resource_usage(cubin: bytes) -> dict:
    """Registers and local-memory (spill) bytes from ``cuobjdump --dump-resource-usage``."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    regs = re.search(r"REG:(\d+)", text)
    local = re.search(r"LOCAL:(\d+)", text)
    return {"registers": int(regs.group(1)) if regs else None, "local_bytes": int(local.group(1)) if local else None}


def launches_of(fn: Callable[[], object]) -> list[Launch]:
    """The kernel launches ``fn()`` makes (nothing runs)."""
    with capture_launches() as launches:
        fn()
    return launches


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def kernel_calls(dtype: torch.dtype, layout: str) -> list:
    """The launches of every op's forward and backward for one (dtype, layout), recorded without running."""
    x = torch.randn(2, 64, 16, 16, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(2, 64, 18, 19, dtype=dtype)[:, :, 1:17, 2:18]
    rows = torch.ones(2, 64)
    calls = [
        lambda: gram.gram_forward(x, 0.1, dtype),
        lambda: gram.style_loss_forward(x, torch.randn(3, 64, 64), torch.tensor([0, 2]), 0.1),
        lambda: gram.gram_backward(torch.randn(2, 64, 64, dtype=dtype), x, 0.1),
        lambda: gram.style_loss_backward(torch.rand(2), torch.randn(2, 64, 64), x),
        lambda: content.content_loss_forward(x, torch.randn(2, 64, 16, 16)),
        lambda: content.content_loss_backward(x, torch.randn(2, 64, 16, 16), torch.tensor(2.0)),
        lambda: instance_norm.instance_norm_forward(x, rows, rows, None, 1e-5, True),
        lambda: instance_norm.instance_norm_backward(x, x, rows, rows, rows, rows, None, True, True),
    ] + [
        call
        for kind in range(len(TV_KINDS))
        for call in (
            lambda kind=kind: tv.tv_forward(x, kind, 1e-8),
            lambda kind=kind: tv.tv_backward(x, kind, 1e-8, torch.ones(2)),
        )
    ]
    if layout == "contiguous":  # LPIPS: strides are plain arguments, one layout shows the variants' resources
        w = torch.rand(64)
        calls += [
            lambda: lpips.lpips_forward(x, x, w, 1e-10),
            lambda: lpips.lpips_backward(x, x, w, 1e-10, torch.ones(2), True, True),
        ]
    return [launch for call in calls for launch in launches_of(call)]
