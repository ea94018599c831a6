"""The ``cpu`` backend: C++ kernels of ``perceptual_kernels._C`` (``csrc/cpu``), float64-capable for gradcheck."""

from .compiled import *  # noqa: F403  (the kernel interface)
