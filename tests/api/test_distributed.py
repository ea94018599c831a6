"""Data-parallel Johnson training on 2 gloo processes launched by torchrun: the same losses and weights as one
process with the same global batch, rank 1 writes nothing, a Ctrl-C on one rank stops every rank with a
checkpoint that one process resumes, the global batch split over the ranks.

The runs use lr 1e-6: Adam's first steps move every weight by about lr whatever its gradient's size, so fp32
rounding (which differs between 1 and 2 processes as it does between 1 and 2 threads) flips the sign of
near-zero gradient components and becomes lr-sized weight differences that grow step by step (at lr 1e-2 the
step-5 loss differs by 2e-4 between a 1- and a 2-thread single-process run). At lr 1e-6 the weights still move
5.6e-5 (relative), 5 times the tolerance, and the runs differ by 1e-6."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from _helpers import tiny_train_config, train_style_quietly

from perceptual_kernels.api import distributed, images, johnson, johnson_data

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS, BATCH, RTOL, LR = 5, 4, 1e-5, 1e-6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six content images (one unreadable) and two styles."""
    root = tmp_path_factory.mktemp("ddp")
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        images.save_image(torch.rand(1, 3, 40 + i, 44, generator=g), root / "data" / f"img{i}.png")
    (root / "data" / "broken.jpg").write_bytes(b"not an image")
    styles = [images.save_image(torch.rand(1, 3, 32, 32, generator=g), root / f"style{i}.png") for i in range(2)]
    return root, root / "data", [str(s) for s in styles]


def train_args(task: str, out: Path, data_dir: Path, styles: list[str]) -> list[str]:
    """The CLI's ``train sr`` or ``train style`` (any other task name; both styles: a CIN network), tiny config."""
    task = "sr" if task == "sr" else "style"
    inputs = [str(data_dir), *styles] if task == "style" else [str(data_dir)]
    return [
        *("train", task, *inputs, "-o", str(out), "--iterations", str(STEPS), "--batch-size", str(BATCH)),
        *("--crop", "32", "--vgg-weights", "random", "--workers", "0", "--checkpoint-every", "3"),
        *("--log-every", "1", "--lr", str(LR), "--sample-every", "5", "--no-progress"),
    ]


def torchrun(out: Path, commands: list[list[str]], *, interrupt: str = ""):
    """``torchrun --nproc-per-node 2`` of CLI commands (one launch, 2 gloo processes on the CPU) writing under
    ``out``; the process and, per rank, the paths under ``out`` it wrote."""
    writes = out.parent / f"{out.name}-writes"
    writes.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
        "PK_TEST_OUT": str(out),
        "PK_TEST_WRITES": str(writes),
        "PK_TEST_INTERRUPT": interrupt,
    }
    args = [a for command in commands for a in (*command, "::")][:-1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*launcher, str(WORKER), *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the agent stops its workers (their own sessions: a kill would leave them running)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"torchrun did not finish in 300 s: {stderr[-3000:]}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return result, {r: (writes / f"rank{r}.txt").read_text().split() for r in range(2)}


def logged_losses(out: Path) -> dict[int, float]:
    with open(out / "losses.csv", newline="") as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}


def flat(tensors: dict) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors.values() if t.is_floating_point()])


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) <= RTOL * abs(b[k]), (k, a[k], b[k])


@pytest.fixture(scope="module")
def single(data):
    """The references: one process, the same global batch."""
    root, data_dir, styles = data
    train_style_quietly(data_dir, styles, root / "single" / "style", iterations=STEPS, batch_size=BATCH, lr=LR)
    config = tiny_train_config(iterations=STEPS, batch_size=BATCH, lr=LR, content_weight=1.0, style_weight=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random VGG weights, the unreadable file
        johnson.train_super_resolution(data_dir, root / "single" / "sr", config, device="cpu", progress=False)
    return root / "single"


@pytest.fixture(scope="module")
def two_ranks(data):
    """One torchrun launch: both tasks on 2 processes, then the style run again with a Ctrl-C on rank 1 after
    step 3."""
    root, data_dir, styles = data
    out = root / "ddp"
    commands = [train_args(task, out / task, data_dir, styles) for task in ("style", "sr", "interrupted")]
    proc, writes = torchrun(out, commands, interrupt="2:1:3")
    assert proc.stdout.count("wrote ") == 2, proc.stderr[-3000:]  # the first two ran through
    return out, proc, writes


@pytest.mark.parametrize("task", ["style", "sr"])
def test_two_ranks_equal_one_process(single, two_ranks, task):
    out, proc, _ = two_ranks
    losses = logged_losses(out / task)
    assert list(losses) == list(range(1, STEPS + 1))
    assert_close(losses, logged_losses(single / task))
    ours, ref = (torch.load(run / task / "checkpoint.pt", weights_only=True) for run in (out, single))
    assert ours["step"] == ref["step"] == STEPS and ours["data_position"] == ref["data_position"]
    weights, expected = flat(ours["model"]), flat(ref["model"])  # SR: the batch norms' running statistics too
    torch.manual_seed(0)
    initial = flat(
        (johnson.TransformNet(num_styles=2) if task == "style" else johnson.SuperResolutionNet()).state_dict()
    )
    assert (weights - expected).norm() <= RTOL * expected.norm()
    assert (expected - initial).norm() >= 3 * RTOL * expected.norm()  # trained (style 5.6e-5): a real comparison
    # Adam's first moments are linear in the gradients: DDP's average is the global batch's gradient, not a
    # multiple of it (1e-3: 1- and 2-thread single-process runs differ by 6e-5)
    moments, expected = (flat({k: v["exp_avg"] for k, v in s["optimizer"]["state"].items()}) for s in (ours, ref))
    assert (moments - expected).norm() <= 1e-3 * expected.norm()
    assert proc.stdout.count(f"wrote {out / task}") == 1  # the summary line: rank 0 only


def test_rank_1_writes_nothing(two_ranks):
    out, _, writes = two_ranks
    assert writes[1] == []
    for task in ("style", "sr"):
        written = {Path(p).name for p in writes[0] if Path(p).parent.name == task}
        assert written >= {"checkpoint.pt", "losses.csv", "model.pth", "model.json"}
        assert out / task / "samples" / "step5.png" in {Path(p) for p in writes[0]}  # rank 0 alone runs the net
    assert out / "interrupted" / "checkpoint.pt" in {Path(p) for p in writes[0]}


def test_ctrl_c_on_one_rank_stops_all_with_a_checkpoint_that_one_process_resumes(data, two_ranks):
    root, data_dir, styles = data
    out, proc, writes = two_ranks
    assert proc.returncode != 0 and "interrupted: checkpoint at step 3" in proc.stdout + proc.stderr
    assert torch.load(out / "interrupted" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = train_style_quietly(
        data_dir, styles, out / "interrupted", resume=True, iterations=STEPS, batch_size=BATCH, lr=LR
    )
    assert [r["step"] for r in resumed.losses] == [4, 5]
    full = logged_losses(out / "style")
    assert_close({r["step"]: r["loss"] for r in resumed.losses}, {4: full[4], 5: full[5]})


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_parts_make_the_global_batches(data, world_size):
    """Threads stand in for the ranks (a barrier for the all-reduce): the parts, concatenated in rank order, are
    the batches of one process, and the positions agree, across the unreadable file."""
    _, data_dir, _ = data
    folder = johnson_data.ImageFolder(data_dir, 32, 0)
    steps, flags, barrier = 5, {}, threading.Barrier(world_size)

    def sum_ints(rank: int, values: list[int]) -> list[int]:
        flags[rank] = values
        barrier.wait()
        total = [sum(v) for v in zip(*flags.values())]
        barrier.wait()
        return total

    parts: dict[int, list] = {}

    def run(rank: int) -> None:
        stream = johnson_data._sharded_batches(folder, BATCH, 0, 0, 3, rank, world_size, lambda v: sum_ints(rank, v))
        parts[rank] = [next(stream) for _ in range(steps)]

    with pytest.warns(UserWarning, match="skipping unreadable"):
        threads = [threading.Thread(target=run, args=(r,)) for r in range(world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        reference = johnson_data._batches(folder, BATCH, 0, 0, 3)
        for k in range(steps):
            batch, position = next(reference)
            assert torch.equal(torch.cat([parts[r][k][0] for r in range(world_size)]), batch)
            assert {parts[r][k][1] for r in range(world_size)} == {position}


def test_batch_must_split_over_the_ranks(data, tmp_path):
    _, data_dir, styles = data
    with pytest.raises(ValueError, match="batch_size 3 .* does not split evenly over the 2 processes"):
        johnson._data_and_run(data_dir, tmp_path / "run", johnson.TrainConfig(batch_size=3, crop=32), styles, 2)


def test_rank_device_under_torchrun(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.rank_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.rank_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="pass device 'cuda'.*cuda:LOCAL_RANK"):
        distributed.rank_device(torch.device("cuda", 0))  # every rank of the node on one GPU


def test_one_process_without_torchrun(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    group = distributed.process_group(torch.device("cpu"))
    assert (group.rank, group.world_size, group.is_main, group.distributed) == (0, 1, True, False)
    assert group.any(True) and group.sum_ints([1, 2]) == [1, 2] and group.on_main(lambda: 3) == 3
    assert not torch.distributed.is_initialized()
