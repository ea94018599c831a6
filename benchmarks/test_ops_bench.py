"""Every op, forward and forward+backward, at the real shapes, for every backend that can run here.

Backends in each group: ``eager`` (the plain PyTorch code people write: ``bmm`` Gram, ``F.mse_loss``,
``F.instance_norm`` + gather), ``compile`` (``torch.compile`` of that code), and ours through the public ops:
``reference`` and, where available, ``triton``, ``cpu``, ``cuda``. Shapes: VGG19 style layers of a 256 / 512 /
1024 image (batch 1), VGG16 / transform-net layers of Johnson training (batch 4 and 16 at 256). CPU runs use
fp32 at 256 only; the rest is skipped with a reason. GPU times come from CUDA events (``extra_info["gpu_ms"]``).
Run: ``python -m pytest benchmarks/test_ops_bench.py --benchmark-only --benchmark-json=out.json`` then
``python -m benchmarks.report out.json``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import perceptual_kernels as pk
from perceptual_kernels.backends import unavailable_reason

try:
    import triton

    TRITON_VERSION = triton.__version__
except ImportError:
    TRITON_VERSION = None

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
SIZES = (256, 512, 1024) if ON_GPU else (256,)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16} if ON_GPU else {"fp32": torch.float32}
BACKENDS = ("eager", "compile", "reference", "triton", "cpu", "cuda")
VGG19_STYLE = {"relu1_1": (64, 1), "relu2_1": (128, 2), "relu3_1": (256, 4), "relu4_1": (512, 8), "relu5_1": (512, 16)}
# (case, B, C, H): Johnson training at 256 (VGG16 relu2_2 features; transform-net norm layers)
JOHNSON = [("relu2_2-b4", 4, 128, 128), ("relu2_2-b16", 16, 128, 128)]
TRANSFORM = [
    ("cin32-b4", 4, 32, 256),
    ("cin64-b4", 4, 64, 128),
    ("cin128-b4", 4, 128, 64),
    ("cin32-b16", 16, 32, 256),
    ("cin128-b16", 16, 128, 64),
]


# --- the plain PyTorch code (eager / compile baselines) ------------------------------------------------------
def eager_gram(x):
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def eager_style(x, target):
    return F.mse_loss(eager_gram(x), target.expand(x.shape[0], -1, -1))


def eager_content(x, target):
    return F.mse_loss(x, target)


def eager_tv(x):
    return (((x[:, :, 1:] - x[:, :, :-1]) ** 2).sum() + ((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2).sum()) / x.numel()


def eager_cin(x, gamma, beta, index):
    y = F.instance_norm(x) * gamma[index][:, :, None, None] + beta[index][:, :, None, None]
    return F.relu(y)


OURS = {
    "gram": lambda x: pk.gram_matrix(x),
    "style_loss": lambda x, t: pk.style_loss(x, t),
    "content_loss": lambda x, t: pk.content_loss(x, t),
    "tv_loss": lambda x: pk.tv_loss(x),
    "conditional_instance_norm": lambda x, g, b, i: pk.conditional_instance_norm(
        x, g, b, style_index=i, activation="relu"
    ),
}
EAGER = {
    "gram": eager_gram,
    "style_loss": eager_style,
    "content_loss": eager_content,
    "tv_loss": eager_tv,
    "conditional_instance_norm": eager_cin,
}
_compiled: dict[str, object] = {}
torch._dynamo.config.cache_size_limit = 64  # one compiled graph per shape and pass: never fall back to eager


def _cases():
    """(op, case, size, B, C, H, W) for every op at its real shapes."""
    for size in SIZES:
        for layer, (channels, down) in VGG19_STYLE.items():
            side = size // down
            yield "gram", layer, size, 1, channels, side, side
            yield "style_loss", layer, size, 1, channels, side, side
        yield "content_loss", "relu4_2", size, 1, 512, size // 8, size // 8
        yield "tv_loss", "image", size, 1, 3, size, size
    for case, B, C, H in JOHNSON:
        yield "content_loss", case, 256, B, C, H, H
        yield "style_loss", case, 256, B, C, H, H
        yield "tv_loss", f"image-b{B}", 256, B, 3, 256, 256
    for case, B, C, H in TRANSFORM:
        yield "conditional_instance_norm", case, 256, B, C, H, H


def _floor(op: str, passes: str, B: int, C: int, M: int, elem: int) -> tuple[float, float]:
    """(useful FLOPs, fewest bytes): Gram work counted symmetric (C^2 M), its backward one (D + D^T) F product."""
    n = B * C * M
    if op in ("gram", "style_loss"):
        flops = B * C * C * M * (1 if passes == "fwd" else 3)
        reads = n * elem * (1 if passes == "fwd" else 2)
        writes = B * C * C * 4 if passes == "fwd" else n * elem
        return flops, reads + writes
    per_element = {
        ("lpips_distance", "fwd"): 2,  # f0, f1 read once
        ("lpips_distance", "fwdbwd"): 5,  # + f0, f1 read again, df0 written
        ("content_loss", "fwd"): 2,
        ("content_loss", "fwdbwd"): 3,
        ("tv_loss", "fwd"): 1,
        ("tv_loss", "fwdbwd"): 2,
        ("conditional_instance_norm", "fwd"): 2,
        ("conditional_instance_norm", "fwdbwd"): 5,
    }[(op, passes)]
    return 0.0, per_element * n * elem


def _inputs(op, B, C, H, W, dtype, requires_grad):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(B, C, H, W, device=DEVICE, generator=g).to(dtype).requires_grad_(requires_grad)
    if op == "style_loss":
        return (x, torch.rand(1, C, C, device=DEVICE, generator=g) * 1e-3)
    if op == "content_loss":
        return (x, torch.randn(B, C, H, W, device=DEVICE, generator=g).to(dtype))
    if op == "lpips_distance":  # f0 (ReLU features, requires grad), the target's features, the layer weights
        x = x.detach().abs().requires_grad_(requires_grad)
        f1 = torch.randn(B, C, H, W, device=DEVICE, generator=g).abs().to(dtype)
        return (x, f1, torch.rand(C, device=DEVICE, generator=g))
    if op == "conditional_instance_norm":
        gamma = torch.randn(32, C, device=DEVICE, generator=g).requires_grad_(requires_grad)
        beta = torch.randn(32, C, device=DEVICE, generator=g).requires_grad_(requires_grad)
        return (x, gamma, beta, torch.randint(0, 32, (B,), device=DEVICE, generator=g))
    return (x,)


def _gpu_ms(fn, reps: int = 20) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _memory(fn) -> int:
    if ON_GPU:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return int(sum(max(0, e.self_cpu_memory_usage) for e in prof.events()))


CASES = [
    (op, case, size, B, C, H, W, dname, passes, backend)
    for op, case, size, B, C, H, W in _cases()
    for dname in DTYPES
    for passes in ("fwd", "fwdbwd")
    for backend in BACKENDS
]


@pytest.mark.parametrize(
    "op,case,size,B,C,H,W,dname,passes,backend",
    CASES,
    ids=[f"{c[0]}-{c[8]}-{c[1]}-{c[2]}-{c[7]}-{c[9]}" for c in CASES],
)
def test_op(benchmark, op, case, size, B, C, H, W, dname, passes, backend):
    dtype = DTYPES[dname]
    if backend not in ("eager", "compile"):
        reason = unavailable_reason(backend, DEVICE, dtype)
        if reason:
            pytest.skip(reason)
    if backend == "compile" and not ON_GPU and size > 256:
        pytest.skip("torch.compile baselines on CPU only at 256")
    inputs = _inputs(op, B, C, H, W, dtype, passes == "fwdbwd")
    if backend == "eager":
        fn = EAGER[op]
    elif backend == "compile":
        if op not in _compiled:
            _compiled[op] = torch.compile(EAGER[op], dynamic=False)
        fn = _compiled[op]
    else:

        def fn(*args, _op=op, _backend=backend):
            with pk.use_backend(_backend):
                return OURS[_op](*args)

    grad_out = None

    def run():
        out = fn(*inputs)
        if passes == "fwdbwd":
            nonlocal grad_out
            if grad_out is None or grad_out.shape != out.shape:
                grad_out = torch.ones_like(out) if out.dim() == 0 else torch.randn_like(out)
            out.backward(grad_out)
            for t in inputs:
                if isinstance(t, torch.Tensor) and t.grad is not None:
                    t.grad = None
        if ON_GPU:
            torch.cuda.synchronize()

    run()  # warm-up (compiles)
    flops, nbytes = _floor(op, passes, B, C, H * W, torch.finfo(dtype).bits // 8)
    benchmark.group = f"{op}-{passes}-{case}-{size}-{dname}"
    benchmark.extra_info.update(
        op=op,
        **{"pass": passes},
        case=case,
        size=size,
        dtype=dname,
        backend=backend,
        device=DEVICE.type,
        device_name=torch.cuda.get_device_name() if ON_GPU else "cpu",
        shape=f"{B}x{C}x{H}x{W}",
        flops=flops,
        bytes=nbytes,
        mem_bytes=_memory(run),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=TRITON_VERSION,
    )
    if ON_GPU:
        benchmark.extra_info["gpu_ms"] = _gpu_ms(run)
    benchmark.pedantic(run, rounds=5 if ON_GPU else 3, warmup_rounds=1)


# --- LPIPS layer distance: the VGG16 layers of LPIPS-VGG, batch 4 ---------------------------------------------
def eager_lpips(f0, f1, w):
    """The lpips package's layer distance: normalize_tensor, squared difference, 1x1 conv, spatial mean."""
    n0 = f0 / (torch.sqrt(torch.sum(f0**2, dim=1, keepdim=True)) + 1e-10)
    n1 = f1 / (torch.sqrt(torch.sum(f1**2, dim=1, keepdim=True)) + 1e-10)
    return F.conv2d((n0 - n1) ** 2, w.to(f0.dtype).view(1, -1, 1, 1)).mean((2, 3)).flatten()


OURS["lpips_distance"] = lambda f0, f1, w: pk.lpips_distance(f0, f1, w)
EAGER["lpips_distance"] = eager_lpips
LPIPS_VGG16 = {"relu1_2": (64, 1), "relu2_2": (128, 2), "relu3_3": (256, 4), "relu4_3": (512, 8), "relu5_3": (512, 16)}
LPIPS_CASES = [
    ("lpips_distance", layer, size, 4, channels, size // down, size // down, dname, passes, backend)
    for size in SIZES
    for layer, (channels, down) in LPIPS_VGG16.items()
    for dname in DTYPES
    for passes in ("fwd", "fwdbwd")
    for backend in BACKENDS
]


@pytest.mark.parametrize(
    "op,case,size,B,C,H,W,dname,passes,backend",
    LPIPS_CASES,
    ids=[f"{c[0]}-{c[8]}-{c[1]}-b4-{c[2]}-{c[7]}-{c[9]}" for c in LPIPS_CASES],
)
def test_lpips_op(benchmark, op, case, size, B, C, H, W, dname, passes, backend):
    test_op(benchmark, op, case, size, B, C, H, W, dname, passes, backend)
