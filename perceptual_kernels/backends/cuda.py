"""The ``cuda`` backend: CUDA kernels of ``perceptual_kernels._C`` (``csrc/cuda``); fp32 / fp16 / bf16."""

from .compiled import *  # noqa: F403  (the kernel interface)
