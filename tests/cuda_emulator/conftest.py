"""Fixtures of the emulator tests: the compiled harnesses (built once per source hash, cached on disk)."""

from __future__ import annotations

import pathlib
import shutil
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import emulator


def pytest_collection_modifyitems(items):
    here = pathlib.Path(__file__).resolve().parent
    for item in items:
        if pathlib.Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.cuda_emulator)


@pytest.fixture(scope="session")
def harness():
    """harness(name) -> the executable of harness_<name>.cpp (skips without g++)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    built: dict[str, pathlib.Path] = {}

    def get(name: str) -> pathlib.Path:
        if name not in built:
            built[name] = emulator.build(emulator.HERE / f"harness_{name}.cpp")
        return built[name]

    return get
