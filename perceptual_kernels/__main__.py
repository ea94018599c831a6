"""``python -m perceptual_kernels``: print what this installation can run."""

from . import info

info()
