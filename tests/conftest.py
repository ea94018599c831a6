"""Shared test fixtures only (the helpers are in _helpers.py): a fresh seed per test and the kernel backend."""

from __future__ import annotations

import os
import random

import pytest
import torch
from _helpers import DEVICE, SHARED_DATA, shared_image  # noqa: F401 (re-exported until the api tests move)

from perceptual_kernels.backends import unavailable_reason


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Seed torch with a fresh seed (or PK_TEST_SEED) and print it, so a failure can be replayed."""
    seed = int(os.environ.get("PK_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    print(f"seed={seed} (replay with PK_TEST_SEED={seed})")
    yield seed


@pytest.fixture
def kernel_backend(request):
    """A kernel backend name that can run float32 tensors on DEVICE (skips with the reason otherwise)."""
    name = request.param
    reason = unavailable_reason(name, DEVICE, torch.float32)
    if reason:
        pytest.skip(reason)
    return name
