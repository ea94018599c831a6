"""The emulator reports broken kernels (harness_selftest.cpp): a missing __syncthreads, out-of-bounds and
misaligned accesses, a barrier in divergent code, warp-shuffle misuse and __trap."""

from __future__ import annotations

import emulator as E
import pytest
import torch

EXPECTED = {
    "off_by_one": "AddressSanitizer: heap-buffer-overflow",
    "shared_oob": "out of bounds for type 'float [256]'",
    "misaligned": "misaligned address",
    "divergent_sync": "waits at __syncthreads",
    "shfl_mask": "warp collective mask names lane 16, which has exited",
    "shfl_src": "shuffle reads lane 16, which is not in the mask",
    "trap": "__trap()",
}


def run(harness, case: str):
    return E.run(
        harness("selftest"), case, {"in": torch.arange(256, dtype=torch.float32)}, {"out": E.Out.contiguous((1,))}
    )


def test_correct_kernel_passes(harness):
    out = run(harness, "ok")
    assert out["fwd"]["out"].item() == out["rev"]["out"].item() == 255 * 256 / 2


def test_missing_syncthreads_changes_the_result(harness):
    out = run(harness, "missing_sync")
    fwd, rev = out["fwd"]["out"], out["rev"]["out"]
    assert not torch.equal(E.bits(fwd), E.bits(rev)), "fiber orders must disagree without the barrier"
    assert fwd.isnan().all(), (
        "thread 0 runs first in forward order and reads the 0xff poison of unwritten shared memory"
    )


@pytest.mark.parametrize("case", sorted(EXPECTED), ids=sorted(EXPECTED))
def test_broken_kernel_is_reported(harness, case):
    with pytest.raises(E.EmulatorError, match=None) as info:
        run(harness, case)
    assert EXPECTED[case] in str(info.value), str(info.value)[-2000:]
