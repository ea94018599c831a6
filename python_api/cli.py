"""``perceptual-kernels`` command: stylize, texture, dip, train, transfer, evaluate-sr, info, bench, demo.

Bad input (arguments, paths, files) prints one line ``error: <message>`` to stderr and exits with code 2, before
any work; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import perceptual_kernels as pk

from . import _checks, bench, demo, dip, distributed, gatys, images, johnson, metrics
from .johnson_nets import SR_FACTORS


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become the one-line ``error: ...`` of :func:`main` (exit code 2)."""

    def error(self, message: str):
        raise _UsageError(message)


def _checked(convert, check, *bounds, **options):
    """An argparse type: ``convert`` the text, then ``check`` it (a :mod:`_checks` function); the messages say
    what was expected."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if convert is int else 'a number'}, got {text!r}"
            ) from None
        try:
            return check("", value, *bounds, **options)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc).strip()) from None

    return parse


def _int(minimum: int | None = None, maximum: int | None = None):
    return _checked(int, _checks.integer, minimum, maximum)


def _float(minimum: float | None = None, positive: bool = False):
    return _checked(float, _checks.number, minimum, positive=positive)


_WEIGHT = _checked(float, _checks.loss_weight)
_SEED = _int(0, _checks.SEED_MAX)


def _list(item):
    """A comma-separated, non-empty list of ``item`` values."""

    def parse(text: str) -> list:
        parts = [v.strip() for v in text.split(",")]
        if not text.strip() or any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list without empty entries, got {text!r}")
        return [item(p) for p in parts]

    return parse


_floats = _list(_float(0.0))
_names = _list(str)
_ints = _list(_int(1))


def _add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``stylize`` and ``texture``."""
    p.add_argument("-o", "--output", required=True, help="output image path (png, jpg, ...)")
    p.add_argument(
        "--style-layers",
        type=_names,
        default=list(gatys.DEFAULT_STYLE_LAYERS),
        help="comma-separated VGG layers for the style loss",
    )
    p.add_argument("--style-layer-weights", type=_floats, default=None, help="one weight per style layer")
    p.add_argument("--style-blend-weights", type=_floats, default=None, help="one weight per style image")
    p.add_argument("--style-weight", type=_WEIGHT, default=1e6)
    p.add_argument("--tv-weight", type=_WEIGHT, default=0.0)
    p.add_argument("--optimizer", choices=gatys.OPTIMIZERS, default="lbfgs")
    p.add_argument("--iterations", type=_int(0), default=500)
    p.add_argument("--lr", type=_float(positive=True), default=None, help="default: 1 for L-BFGS, 0.02 for Adam")
    p.add_argument("--arch", choices=("vgg16", "vgg19"), default="vgg19")
    p.add_argument("--weights", default="imagenet", help='"imagenet", "caffe", "random" or a path to a VGG state dict')
    p.add_argument("--seed", type=_SEED, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", default=None, choices=pk.backends.BACKENDS, help="force a kernel backend")
    p.add_argument("--autocast", action="store_true", help="run the VGG pass in bf16 (losses stay fp32)")
    p.add_argument("--save-every", type=_int(0), default=0, help="write the image every N iterations")
    p.add_argument(
        "--save-path",
        default=None,
        help="intermediate image path, may contain {iteration}; also where Ctrl-C keeps the current image "
        "(default: the output path)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--tile-size",
        type=_int(1),
        default=None,
        help="compute the loss exactly tile by tile (core side, a multiple of 16 up to relu5_1) in bounded memory; "
        "under torchrun the tiles are spread over the processes",
    )
    p.add_argument(
        "--lbfgs-history",
        type=_int(1),
        default=100,
        help="L-BFGS memory: 2 image-sized vectors per step kept (lower it for very large images)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perceptual-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="Gatys style transfer of CONTENT in the style of STYLE(s)")
    p.add_argument("content")
    p.add_argument("styles", nargs="+")
    _add_common(p)
    p.add_argument("--size", type=_int(1), default=512, help="long side of the output")
    p.add_argument("--style-scale", type=_float(positive=True), default=1.0)
    p.add_argument(
        "--multiscale", type=_ints, default=None, help="increasing long sides, e.g. 256,512 (replaces --size)"
    )
    p.add_argument("--content-layers", type=_names, default=list(gatys.DEFAULT_CONTENT_LAYERS))
    p.add_argument("--content-weight", type=_WEIGHT, default=1.0)
    p.add_argument("--init", default="content", help='"content", "noise" or an image path')
    p.add_argument("--preserve-colors", choices=gatys.COLOR_METHODS, default=None)
    p.add_argument("--pooling", choices=("max", "avg"), default="max")

    p = sub.add_parser("texture", help="Gatys texture synthesis from STYLE(s)")
    p.add_argument("styles", nargs="+")
    _add_common(p)
    p.add_argument("--size", type=_ints, default=[256], help="side, or height,width")
    p.add_argument("--style-size", type=_int(1), default=None, help="long side of the style image")
    p.add_argument("--pooling", choices=("max", "avg"), default="avg")

    _add_dip(sub)
    _add_johnson(sub)
    sub.add_parser("info", help="versions, devices, backends and the backend each op uses")
    p = sub.add_parser("bench", help="time every op against plain PyTorch on this machine and print a table")
    p.add_argument("--quick", action="store_true", help="small shapes (under two minutes on a 2-core CPU)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the plain code")
    p.add_argument("--device", default=None)

    p = sub.add_parser("demo", help="offline demo on generated images: stylize, texture, a table of losses")
    p.add_argument("-o", "--output", default="perceptual-kernels-demo", help="output folder")
    p.add_argument("--size", type=_int(16), default=128)
    p.add_argument("--iterations", type=_int(0), default=40)
    p.add_argument("--weights", default=None, help='default: "imagenet" when cached, else "random"')
    p.add_argument("--device", default=None)
    return parser


def _add_dip(sub) -> None:
    """``dip {denoise,inpaint,sr}``: Deep Image Prior restoration."""
    p = sub.add_parser("dip", help="Deep Image Prior: denoise, inpaint, super-resolve (sr)")
    tasks = p.add_subparsers(dest="task", required=True)
    for task, help_text in (
        ("denoise", "denoise IMAGE"),
        ("inpaint", "fill the black pixels of MASK in IMAGE"),
        ("sr", "upscale IMAGE by --factor"),
    ):
        t = tasks.add_parser(task, help=help_text)
        t.add_argument("image")
        if task == "inpaint":
            t.add_argument("mask", help="mask image: white = known pixel")
        if task == "sr":
            t.add_argument("--factor", type=_int(1), required=True, help="integer scale factor (4, 8)")
        if task == "denoise":
            t.add_argument(
                "--add-noise",
                type=_float(0.0),
                default=None,
                metavar="SIGMA",
                help="treat IMAGE as clean: add Gaussian noise of SIGMA (0-255 scale), use it as GT",
            )
        t.add_argument("-o", "--output", required=True)
        t.add_argument("--ground-truth", default=None, help="clean image: PSNR per log step, best iterate kept")
        t.add_argument("--iterations", type=_int(1), default=None, help="default: the paper's for the task")
        t.add_argument("--lr", type=_float(positive=True), default=0.01)
        t.add_argument("--reg-noise-std", type=_float(0.0), default=None)
        t.add_argument("--net", choices=("skip", "unet", "hourglass"), default="skip")
        t.add_argument("--tv-weight", type=_WEIGHT, default=0.0)
        t.add_argument("--log-every", type=_int(1), default=100)
        t.add_argument(
            "--output-kind",
            choices=("average", "last", "best"),
            default="average",
            help="which image to write (best needs a ground truth)",
        )
        t.add_argument("--seed", type=_SEED, default=0)
        t.add_argument("--device", default=None)
        t.add_argument("--autocast", action="store_true")
        t.add_argument("--compile", action="store_true", help="torch.compile the network")
        t.add_argument("--no-progress", action="store_true")


def _run_dip(args: argparse.Namespace) -> int:
    kwargs = dict(
        lr=args.lr,
        net=args.net,
        tv_weight=args.tv_weight,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        autocast=args.autocast,
        compile=args.compile,
        progress=not args.no_progress,
        ground_truth=args.ground_truth,
        save_path=args.output,
    )  # Ctrl-C keeps the running average
    if args.iterations is not None:
        kwargs["iterations"] = args.iterations
    if args.reg_noise_std is not None:
        kwargs["reg_noise_std"] = args.reg_noise_std
    inputs = [args.image] + ([args.mask] if args.task == "inpaint" else [])
    _checks.output_path("-o", args.output, inputs + [args.ground_truth], images.SAVE_FORMATS)
    add_noise = getattr(args, "add_noise", None)
    if add_noise is not None and args.ground_truth is not None:
        raise ValueError("--add-noise makes IMAGE the ground truth: do not pass --ground-truth as well")
    if args.output_kind == "best" and args.ground_truth is None and add_noise is None:
        raise ValueError("--output-kind best needs --ground-truth (or --add-noise)")
    if args.task == "denoise":
        noisy = args.image
        if args.add_noise is not None:
            kwargs["ground_truth"] = images.load_image(args.image)
            noisy = dip.add_noise(kwargs["ground_truth"], args.add_noise, args.seed)
        result = dip.denoise(noisy, **kwargs)
    elif args.task == "inpaint":
        result = dip.inpaint(args.image, args.mask, **kwargs)
    else:
        result = dip.super_resolve(args.image, args.factor, **kwargs)
    image = {"average": result.average, "last": result.output, "best": result.best}[args.output_kind]
    saved = images.save_image(image, args.output, protected=inputs)
    h = result.history
    summary = f"wrote {saved} after {h.iteration[-1] if h.iteration else 0} iterations"
    if result.best_psnr is not None:
        summary += f"; PSNR last {h.psnr[-1]:.2f} dB, average {h.psnr_average[-1]:.2f} dB, best {result.best_psnr:.2f}"
    print(summary)
    return 0


def _add_johnson(sub) -> None:
    """``train {style,sr}``, ``transfer``, ``evaluate-sr``: Johnson et al. feed-forward networks."""
    p = sub.add_parser("train", help="train a feed-forward style (one or many styles) or super-resolution net")
    kinds = p.add_subparsers(dest="kind", required=True)
    style = kinds.add_parser("style", help="DATA folder of content images, one or more STYLE images (CIN rows)")
    style.add_argument("data")
    style.add_argument("styles", nargs="+")
    sr = kinds.add_parser("sr", help="DATA folder of HR images")
    sr.add_argument("data")
    sr.add_argument("--factor", type=int, choices=SR_FACTORS, default=4)
    sr.add_argument("--pixel-weight", type=_WEIGHT, default=0.0)
    defaults = johnson.TrainConfig()
    for t in (style, sr):
        t.add_argument("-o", "--output", required=True, help="run folder: checkpoint.pt, losses.csv, model.pth")
        t.add_argument(
            "--iterations",
            type=_int(1),
            default=defaults.iterations,
            help="target step count (with --resume: at least the checkpoint's step)",
        )
        t.add_argument("--batch-size", type=_int(1), default=defaults.batch_size)
        t.add_argument("--crop", type=_int(1), default=None, help="training crop (default 256 style, 288 sr)")
        t.add_argument("--lr", type=_float(positive=True), default=defaults.lr)
        t.add_argument("--content-weight", type=_WEIGHT, default=None)
        t.add_argument("--tv-weight", type=_WEIGHT, default=0.0)
        t.add_argument("--vgg-weights", default="imagenet")
        t.add_argument("--workers", type=_int(0), default=defaults.workers)
        t.add_argument(
            "--checkpoint-every",
            type=_int(0),
            default=defaults.checkpoint_every,
            help="0: only at the end and on Ctrl-C",
        )
        t.add_argument("--sample-every", type=_int(0), default=0)
        t.add_argument("--log-every", type=_int(1), default=defaults.log_every)
        t.add_argument("--seed", type=_SEED, default=0)
        t.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint.pt")
        t.add_argument("--device", default=None)
        t.add_argument("--autocast", action="store_true")
        t.add_argument("--no-progress", action="store_true")
    style.add_argument("--style-weight", type=_WEIGHT, default=defaults.style_weight)
    style.add_argument("--style-size", type=_int(1), default=None)

    p = sub.add_parser("transfer", help="run a trained MODEL on an IMAGE or a folder of images")
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, help="output image, or folder when IMAGE is a folder")
    p.add_argument("--style", default=None, help='multi-style models: "K" or a mix "0:0.5,3:0.5"')
    p.add_argument("--all-styles", action="store_true", help="render every style of the model side by side")
    p.add_argument("--device", default=None)

    p = sub.add_parser("evaluate-sr", help="PSNR / SSIM (Y, shaved) of a SR model or of bicubic on a folder")
    p.add_argument("data", help="folder of HR images (e.g. Set5)")
    p.add_argument("--model", default=None, help="a trained super-resolution model (default: bicubic)")
    p.add_argument("--factor", type=_int(1), default=None, help="default: the model's factor, 4 for bicubic")
    p.add_argument("--device", default=None)
    p.add_argument("--lpips", action="store_true", help="also LPIPS-VGG (RGB, not shaved; needs the lpips package)")
    p.add_argument("--lpips-weights", default=None, help="LPIPS linear-layer file (default: the lpips package's)")
    p.add_argument("--lpips-vgg", default="imagenet", help="LPIPS VGG16 backbone: imagenet (default), a path or random")


def _run_train(args: argparse.Namespace) -> int:
    sr = args.kind == "sr"
    config = johnson.TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        crop=args.crop if args.crop is not None else (288 if sr else 256),
        lr=args.lr,
        content_weight=args.content_weight if args.content_weight is not None else (1.0 if sr else 1e5),
        style_weight=0.0 if sr else args.style_weight,
        tv_weight=args.tv_weight,
        pixel_weight=args.pixel_weight if sr else 0.0,
        style_size=None if sr else args.style_size,
        factor=args.factor if sr else 4,
        vgg_weights=args.vgg_weights,
        seed=args.seed,
        workers=args.workers,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        log_every=args.log_every,
        autocast=args.autocast,
    )
    common = dict(resume=args.resume, device=args.device, progress=not args.no_progress)
    try:
        if sr:
            result = johnson.train_super_resolution(args.data, args.output, config, **common)
        else:
            result = johnson.train_style(args.data, args.styles, args.output, config, **common)
        if distributed.is_main_process():
            _print_trained(result)
    finally:
        distributed.teardown()  # under torchrun: the process group the training made
    return 0


def _print_trained(result) -> None:
    """The run's summary line (rank 0 only under torchrun)."""
    if result.losses:
        print(
            f"wrote {result.model_path}; last logged loss {result.losses[-1]['loss']:.4g} at step "
            f"{result.losses[-1]['step']}"
        )
    else:
        print(f"wrote {result.model_path}; no training step was left (the checkpoint is at --iterations)")


def _run_transfer(args: argparse.Namespace) -> int:
    source = Path(args.image)
    if not source.exists():
        raise FileNotFoundError(f"IMAGE {source} does not exist")
    if source.is_dir():
        _checks.output_path("-o", args.output, folder=True)
        pairs = [(p, Path(args.output) / (p.stem + ".png")) for p in images.image_files(source)]
        if not pairs:
            raise ValueError(f"no images ({', '.join(images.IMAGE_SUFFIXES)}) in the folder {source}")
        names = [out.name for _, out in pairs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"several images in {source} would be written to one file ({', '.join(twice)}): rename them"
            )
    else:
        pairs = [(source, Path(args.output))]
    inputs = [args.model, *(image for image, _ in pairs)]
    for _, out_path in pairs:
        _checks.output_path("-o", out_path, inputs, images.SAVE_FORMATS)
    device = johnson.resolve_device(args.device)
    model, _ = johnson.load_model(args.model)
    style = johnson.check_style(model, args.style, args.all_styles)
    for image_path, out_path in pairs:
        out = johnson.stylize_feedforward(model, image_path, style=style, all_styles=args.all_styles, device=device)
        if out.shape[0] > 1:  # all styles: side by side
            out = torch.cat(list(out), dim=-1).unsqueeze(0)
        print(f"wrote {images.save_image(out, out_path, protected=inputs)}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    folder = _checks.input_folder("DATA", args.data)
    files = images.image_files(folder)
    if not files:
        raise ValueError(f"no images ({', '.join(images.IMAGE_SUFFIXES)}) in the folder {folder}")
    factor, upscale = args.factor if args.factor is not None else 4, None
    if args.model is not None:
        device = johnson.resolve_device(args.device)
        model, _ = johnson.load_model(args.model)
        model_factor = getattr(model, "factor", None)
        if model_factor is None:
            raise ValueError(f"--model {args.model} is a style transfer model, not a super-resolution model")
        if args.factor is not None and args.factor != model_factor:
            raise ValueError(f"--factor {args.factor} does not match the x{model_factor} model {args.model}")
        factor = model_factor
        upscale = lambda lr: johnson.stylize_feedforward(model, lr, device=device).cpu()  # noqa: E731
    lpips_model = _lpips_model(args) if args.lpips else None  # before any work: a missing lpips fails fast
    hr = {p.stem: images.load_image(p) for p in files}
    report = metrics.evaluate_sr(hr, factor, upscale, lpips_model=lpips_model)
    source = "bicubic" if args.model is None else f"model {args.model}"
    lp_head, lp_cell = (" LPIPS |", lambda row: f" {row['lpips']:.4f} |") if args.lpips else ("", lambda row: "")
    print(f"| image | PSNR-Y (dB) | SSIM-Y |{lp_head}  ({source}, x{factor})")
    for name, row in report["per_image"].items():
        print(f"| {name} | {row['psnr_y']:.2f} | {row['ssim_y']:.4f} |{lp_cell(row)}")
    mean = report["mean"]
    print(f"| mean | {mean['psnr_y']:.2f} | {mean['ssim_y']:.4f} |{lp_cell(mean)}")
    return 0


def _lpips_model(args: argparse.Namespace) -> torch.nn.Module:
    """The LPIPS-VGG model of ``evaluate-sr --lpips`` on ``--device`` (its errors name the missing package/file)."""
    from .lpips_vgg import LPIPS

    return LPIPS(args.lpips_vgg, args.lpips_weights).to(johnson.resolve_device(args.device))


def _common_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        style_blend_weights=args.style_blend_weights,
        style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        optimizer=args.optimizer,
        iterations=args.iterations,
        lr=args.lr,
        arch=args.arch,
        weights=args.weights,
        pooling=args.pooling,
        seed=args.seed,
        device=args.device,
        autocast=args.autocast,
        progress=not args.no_progress,
        save_every=args.save_every,
        save_path=args.save_path,
        tile_size=args.tile_size,
        lbfgs_history=args.lbfgs_history,
    )


def _message(exc: BaseException) -> str:
    """One line: an OSError without its errno prefix (naming its file once), anything else as it says."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None and str(exc.filename) not in text:
            text += f": {exc.filename}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input prints one line ``error: ...`` and returns 2, Ctrl-C returns 130."""
    try:
        return _run(build_parser().parse_args(argv))
    except (_UsageError, ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        pk.info()
        return 0
    if args.command == "bench":
        print(bench.run(args.device, quick=args.quick, compile=args.compile))
        return 0
    if args.command == "demo":
        demo.run(
            Path(args.output), size=args.size, iterations=args.iterations, weights=args.weights, device=args.device
        )
        return 0
    if args.command == "dip":
        return _run_dip(args)
    if args.command in ("train", "transfer", "evaluate-sr"):
        return {"train": _run_train, "transfer": _run_transfer, "evaluate-sr": _run_evaluate}[args.command](args)
    inputs = [*args.styles, getattr(args, "content", None), getattr(args, "init", None)]
    inputs = [p for p in inputs if p is not None and p not in gatys.INITS]
    _checks.output_path("-o", args.output, inputs, images.SAVE_FORMATS)
    if args.save_path is None:  # --save-every writes there, and Ctrl-C keeps the current image there
        args.save_path = args.output
    try:  # under torchrun with --tile-size the tiles spread over the processes; rank 0 writes
        return _run_gatys(args, inputs)
    finally:
        distributed.teardown()


def _run_gatys(args: argparse.Namespace, inputs: list) -> int:
    with pk.use_backend(args.backend):
        if args.command == "stylize":
            image, history = gatys.stylize(
                args.content,
                args.styles,
                size=args.size,
                style_scale=args.style_scale,
                multiscale=args.multiscale,
                content_layers=args.content_layers,
                content_weight=args.content_weight,
                init=args.init,
                preserve_colors=args.preserve_colors,
                **_common_kwargs(args),
            )
        else:
            if len(args.size) > 2:
                raise ValueError(f"--size must be a side or height,width, got {len(args.size)} values")
            size = args.size[0] if len(args.size) == 1 else tuple(args.size)
            image, history = gatys.synthesize_texture(
                args.styles, size, style_size=args.style_size, **_common_kwargs(args)
            )
    if not distributed.is_main_process():
        return 0
    saved = images.save_image(image, args.output, protected=inputs)
    print(
        f"wrote {saved} ({len(history.loss)} iterations, final loss {history.loss[-1]:.4g}, {history.time[-1]:.1f} s)"
        if history.loss
        else f"wrote {saved}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
