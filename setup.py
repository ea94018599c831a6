"""Build script: the Python package, plus the compiled extension ``perceptual_kernels._C`` from ``csrc/``.

Environment:
  PERCEPTUAL_KERNELS_NO_EXT=1     pure-Python install (reference + Triton backends only)
  PERCEPTUAL_KERNELS_FORCE_CUDA=1 fail loudly when the CUDA part cannot be built
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

BUILD_INFO = pathlib.Path(__file__).parent / "perceptual_kernels" / "_build_info.json"


def _extension_kwargs() -> dict:
    """``ext_modules`` / ``cmdclass`` for ``_C``: always the C++ CPU part, the CUDA part when torch has CUDA and
    nvcc is found. Empty when PERCEPTUAL_KERNELS_NO_EXT=1."""
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if os.environ.get("PERCEPTUAL_KERNELS_NO_EXT") == "1" or not cpp_sources:
        BUILD_INFO.unlink(missing_ok=True)
        return {}
    import torch
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
    cxx = ["-O3", *openmp]
    if with_cuda:
        ext = CUDAExtension(
            "perceptual_kernels._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=macros + [("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
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
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**_extension_kwargs())
