"""Build script: the Python package, plus the compiled extension ``perceptual_kernels._C`` from ``csrc/``.

Environment:
  PERCEPTUAL_KERNELS_NO_EXT=1     pure-Python install (reference + Triton backends only)
  PERCEPTUAL_KERNELS_FORCE_CUDA=1 fail loudly when the CUDA part cannot be built
  PERCEPTUAL_KERNELS_DEBUG=1      keep debug information (-g) in the extension (default: release, -g0)
  TORCH_CUDA_ARCH_LIST            GPU architectures to build for (torch's cpp_extension reads it)
Install with ``pip install --no-build-isolation .`` so the extension builds against the torch you run.
The torch version and CUDA architectures of the build go to ``perceptual_kernels/_build_info.json``, which
:mod:`perceptual_kernels.backends.native` compares with the running torch before loading ``_C``.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import sys

from setuptools import setup

ROOT = pathlib.Path(__file__).resolve().parent
BUILD_INFO = ROOT / "perceptual_kernels" / "_build_info.json"
NO_TORCH = """\
error: building perceptual-kernels needs the installed torch: its C++/CUDA extension is compiled against the
torch you run, and pip's build isolation hides that torch (torch is deliberately not a build requirement, so
pip cannot fetch a different one). Install torch first, then build without isolation:
    pip install --no-build-isolation .          (editable: pip install --no-build-isolation -e .)
(or set PERCEPTUAL_KERNELS_NO_EXT=1 for a pure-Python install without the compiled kernels)"""


def _import_torch():
    try:
        import torch
    except ImportError:
        sys.exit(NO_TORCH)
    return torch


def _extension_kwargs() -> dict:
    """``ext_modules`` / ``cmdclass`` for ``_C``: always the C++ CPU part, the CUDA part when torch has CUDA and
    nvcc is found. Empty when PERCEPTUAL_KERNELS_NO_EXT=1."""
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if "sdist" in sys.argv:  # a source archive needs no compiler and no torch
        return {}
    if os.environ.get("PERCEPTUAL_KERNELS_NO_EXT") == "1" or not cpp_sources:
        BUILD_INFO.unlink(missing_ok=True)
        return {}
    torch = _import_torch()
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    with_cuda = bool(cuda_sources) and torch.version.cuda is not None and CUDA_HOME is not None
    if os.environ.get("PERCEPTUAL_KERNELS_FORCE_CUDA") == "1" and not with_cuda:
        raise RuntimeError(
            "PERCEPTUAL_KERNELS_FORCE_CUDA=1 but the CUDA extension cannot be built: "
            f"torch CUDA={torch.version.cuda}, CUDA_HOME={CUDA_HOME}, {len(cuda_sources)} .cu files"
        )
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "detected at build time") if with_cuda else ""
    macros = [("PK_TORCH_VERSION", f'"{torch.__version__}"'), ("PK_CUDA_ARCH_LIST", f'"{arch_list}"')]
    include_dirs = [os.path.abspath("csrc")]
    # cpp_extension adds the C++ standard torch needs; -fopenmp makes at::parallel_for (inline, OpenMP in ATen's
    # CPU builds) run on torch's threads instead of serially, sharing the libgomp torch has loaded
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    debug = ["-g"] if os.environ.get("PERCEPTUAL_KERNELS_DEBUG") == "1" else ["-g0"]  # -g0 overrides Python's -g
    cxx = ["-O3", *debug, *openmp]
    if with_cuda:
        ext = CUDAExtension(
            "perceptual_kernels._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=macros + [("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo", *debug]},
            extra_link_args=openmp,
        )
    else:
        ext = CppExtension(
            "perceptual_kernels._C",
            cpp_sources,
            include_dirs=include_dirs,
            define_macros=macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=openmp,
        )
    BUILD_INFO.write_text(
        json.dumps(
            {"torch": torch.__version__, "cuda": torch.version.cuda if with_cuda else None, "cuda_arch_list": arch_list}
        )
        + "\n"
    )

    class BuildExt(BuildExtension.with_options(use_ninja=True)):  # type: ignore[misc]
        """Objects in a fixed ./build folder, so a reinstall without source changes lets ninja skip compiling."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.build_temp = str(ROOT / "build" / f"temp-torch{torch.__version__}")

    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExt}}


setup(**_extension_kwargs())
