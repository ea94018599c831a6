"""Build script: the Python package, plus the compiled extension ``perceptual_kernels._C`` from ``csrc/``.

Environment:
  PERCEPTUAL_KERNELS_NO_EXT=1     pure-Python install (reference + Triton backends only)
  PERCEPTUAL_KERNELS_FORCE_CUDA=1 fail loudly when the CUDA part cannot be built
  TORCH_CUDA_ARCH_LIST            GPU architectures to build for (torch's cpp_extension reads it)
Install with ``pip install --no-build-isolation .`` so the extension builds against the torch you run.
"""
from __future__ import annotations

import glob
import os

from setuptools import setup


def _extension_kwargs() -> dict:
    """``ext_modules`` / ``cmdclass`` for ``_C``: always the C++ CPU part, the CUDA part when torch has CUDA and
    nvcc is found. Empty while ``csrc/`` holds no sources or when PERCEPTUAL_KERNELS_NO_EXT=1."""
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if os.environ.get("PERCEPTUAL_KERNELS_NO_EXT") == "1" or not cpp_sources:
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    with_cuda = bool(cuda_sources) and torch.version.cuda is not None and CUDA_HOME is not None
    if os.environ.get("PERCEPTUAL_KERNELS_FORCE_CUDA") == "1" and not with_cuda:
        raise RuntimeError("PERCEPTUAL_KERNELS_FORCE_CUDA=1 but the CUDA extension cannot be built: "
                           f"torch CUDA={torch.version.cuda}, CUDA_HOME={CUDA_HOME}, {len(cuda_sources)} .cu files")
    cxx = ["-O3", "-std=c++17"]
    if with_cuda:
        ext = CUDAExtension("perceptual_kernels._C", cpp_sources + cuda_sources,
                            define_macros=[("WITH_CUDA", None)],
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]})
    else:
        ext = CppExtension("perceptual_kernels._C", cpp_sources, extra_compile_args={"cxx": cxx})
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=False)}}


setup(**_extension_kwargs())
