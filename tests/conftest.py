"""Shared test fixtures only (the helpers are in _helpers.py): the seed of each test and the kernel backend.

Seeds. Every test runs under its own fixed seed (``torch.manual_seed``), derived from its node id with CRC-32
(stable across runs, processes and machines, unlike Python's salted ``hash()``), so a CI run is reproducible.
The seed is printed, and pytest shows it with a failing test's captured output. ``PK_TEST_SEED`` overrides it:

    PK_TEST_SEED=<int>      every selected test runs under that seed (replay a failure: copy the printed line)
    PK_TEST_SEED=random     every test draws a fresh seed (a wider search; the failing seed is printed)

Tests that need a NumPy or Python generator take the ``fresh_seed`` fixture's value and seed one from it.
"""

from __future__ import annotations

import os
import random
import zlib

import pytest
import torch
from _helpers import DEVICE

from perceptual_kernels.backends import unavailable_reason


def seed_of(nodeid: str) -> int:
    """The seed of a test: ``PK_TEST_SEED`` if set (an int, or ``random`` for a fresh one), else the CRC-32 of its
    node id."""
    value = os.environ.get("PK_TEST_SEED", "").strip()
    if value == "random":
        return random.SystemRandom().randrange(2**31)
    if value:
        try:
            return int(value)
        except ValueError:
            raise pytest.UsageError(f"PK_TEST_SEED must be an integer or 'random', got {value!r}") from None
    return zlib.crc32(nodeid.encode()) % 2**31


def pytest_configure(config):
    seed_of("")  # a bad PK_TEST_SEED is a usage error before any test runs


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Seed torch with the test's seed (see the module docstring) and print it, so a failure can be replayed."""
    seed = seed_of(request.node.nodeid)
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
