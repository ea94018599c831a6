"""``perceptual-kernels`` command: stylize, texture, info, demo."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import perceptual_kernels as pk

from . import bench, demo, dip, gatys, images, johnson, metrics


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``stylize`` and ``texture``."""
    p.add_argument("-o", "--output", required=True, help="output image path (png, jpg, ...)")
    p.add_argument("--style-layers", type=_names, default=list(gatys.DEFAULT_STYLE_LAYERS),
                   help="comma-separated VGG layers for the style loss")
    p.add_argument("--style-layer-weights", type=_floats, default=None, help="one weight per style layer")
    p.add_argument("--style-blend-weights", type=_floats, default=None, help="one weight per style image")
    p.add_argument("--style-weight", type=float, default=1e6)
    p.add_argument("--tv-weight", type=float, default=0.0)
    p.add_argument("--optimizer", choices=gatys.OPTIMIZERS, default="lbfgs")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--lr", type=float, default=None, help="default: 1 for L-BFGS, 0.02 for Adam")
    p.add_argument("--arch", choices=("vgg16", "vgg19"), default="vgg19")
    p.add_argument("--weights", default="imagenet",
                   help='"imagenet", "caffe", "random" or a path to a VGG state dict')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--backend", default=None, choices=pk.backends.BACKENDS, help="force a kernel backend")
    p.add_argument("--autocast", action="store_true", help="run the VGG pass in bf16 (losses stay fp32)")
    p.add_argument("--save-every", type=int, default=0, help="write the image every N iterations")
    p.add_argument("--save-path", default=None, help="intermediate image path; may contain {iteration}")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptual-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="Gatys style transfer of CONTENT in the style of STYLE(s)")
    p.add_argument("content")
    p.add_argument("styles", nargs="+")
    _add_common(p)
    p.add_argument("--size", type=int, default=512, help="long side of the output")
    p.add_argument("--style-scale", type=float, default=1.0)
    p.add_argument("--multiscale", type=_ints, default=None, help="increasing long sides, e.g. 256,512")
    p.add_argument("--content-layers", type=_names, default=list(gatys.DEFAULT_CONTENT_LAYERS))
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--init", default="content", help='"content", "noise" or an image path')
    p.add_argument("--preserve-colors", choices=gatys.COLOR_METHODS, default=None)
    p.add_argument("--pooling", choices=("max", "avg"), default="max")

    p = sub.add_parser("texture", help="Gatys texture synthesis from STYLE(s)")
    p.add_argument("styles", nargs="+")
    _add_common(p)
    p.add_argument("--size", type=_ints, default=[256], help="side, or height,width")
    p.add_argument("--style-size", type=int, default=None, help="long side of the style image")
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
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--weights", default=None, help='default: "imagenet" when cached, else "random"')
    p.add_argument("--device", default=None)
    return parser


def _add_dip(sub) -> None:
    """``dip {denoise,inpaint,sr}``: Deep Image Prior restoration."""
    p = sub.add_parser("dip", help="Deep Image Prior: denoise, inpaint, super-resolve (sr)")
    tasks = p.add_subparsers(dest="task", required=True)
    for task, help_text in (("denoise", "denoise IMAGE"), ("inpaint", "fill the black pixels of MASK in IMAGE"),
                            ("sr", "upscale IMAGE by --factor")):
        t = tasks.add_parser(task, help=help_text)
        t.add_argument("image")
        if task == "inpaint":
            t.add_argument("mask", help="mask image: white = known pixel")
        if task == "sr":
            t.add_argument("--factor", type=float, required=True, help="integer scale factor (4, 8)")
        if task == "denoise":
            t.add_argument("--add-noise", type=float, default=None, metavar="SIGMA",
                           help="treat IMAGE as clean: add Gaussian noise of SIGMA (0-255 scale), use it as GT")
        t.add_argument("-o", "--output", required=True)
        t.add_argument("--ground-truth", default=None, help="clean image: PSNR per log step, best iterate kept")
        t.add_argument("--iterations", type=int, default=None, help="default: the paper's for the task")
        t.add_argument("--lr", type=float, default=0.01)
        t.add_argument("--reg-noise-std", type=float, default=None)
        t.add_argument("--net", choices=("skip", "unet", "hourglass"), default="skip")
        t.add_argument("--tv-weight", type=float, default=0.0)
        t.add_argument("--log-every", type=int, default=100)
        t.add_argument("--output-kind", choices=("average", "last", "best"), default="average",
                       help="which image to write (best needs a ground truth)")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--device", default=None)
        t.add_argument("--autocast", action="store_true")
        t.add_argument("--compile", action="store_true", help="torch.compile the network")
        t.add_argument("--no-progress", action="store_true")


def _run_dip(args: argparse.Namespace) -> int:
    kwargs = dict(lr=args.lr, net=args.net, tv_weight=args.tv_weight, log_every=args.log_every, seed=args.seed,
                  device=args.device, autocast=args.autocast, compile=args.compile, progress=not args.no_progress,
                  ground_truth=args.ground_truth, save_path=args.output)  # Ctrl-C keeps the running average
    if args.iterations is not None:
        kwargs["iterations"] = args.iterations
    if args.reg_noise_std is not None:
        kwargs["reg_noise_std"] = args.reg_noise_std
    inputs = [args.image] + ([args.mask] if args.task == "inpaint" else [])
    _check_output(args.output, inputs + ([args.ground_truth] if args.ground_truth else []))
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
    if args.output_kind == "best" and result.best is None:
        raise ValueError("--output-kind best needs --ground-truth (or --add-noise)")
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
    sr.add_argument("--factor", type=int, default=4)
    sr.add_argument("--pixel-weight", type=float, default=0.0)
    defaults = johnson.TrainConfig()
    for t in (style, sr):
        t.add_argument("-o", "--output", required=True, help="run folder: checkpoint.pt, losses.csv, model.pth")
        t.add_argument("--iterations", type=int, default=defaults.iterations)
        t.add_argument("--batch-size", type=int, default=defaults.batch_size)
        t.add_argument("--crop", type=int, default=None, help="training crop (default 256 style, 288 sr)")
        t.add_argument("--lr", type=float, default=defaults.lr)
        t.add_argument("--content-weight", type=float, default=None)
        t.add_argument("--tv-weight", type=float, default=0.0)
        t.add_argument("--vgg-weights", default="imagenet")
        t.add_argument("--workers", type=int, default=defaults.workers)
        t.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
        t.add_argument("--sample-every", type=int, default=0)
        t.add_argument("--log-every", type=int, default=defaults.log_every)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint.pt")
        t.add_argument("--device", default=None)
        t.add_argument("--autocast", action="store_true")
        t.add_argument("--no-progress", action="store_true")
    style.add_argument("--style-weight", type=float, default=defaults.style_weight)
    style.add_argument("--style-size", type=int, default=None)

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
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--device", default=None)


def _run_train(args: argparse.Namespace) -> int:
    sr = args.kind == "sr"
    config = johnson.TrainConfig(
        iterations=args.iterations, batch_size=args.batch_size, crop=args.crop or (288 if sr else 256), lr=args.lr,
        content_weight=args.content_weight if args.content_weight is not None else (1.0 if sr else 1e5),
        style_weight=0.0 if sr else args.style_weight, tv_weight=args.tv_weight,
        pixel_weight=args.pixel_weight if sr else 0.0, style_size=None if sr else args.style_size,
        factor=args.factor if sr else 4, vgg_weights=args.vgg_weights, seed=args.seed, workers=args.workers,
        checkpoint_every=args.checkpoint_every, sample_every=args.sample_every, log_every=args.log_every,
        autocast=args.autocast)
    common = dict(resume=args.resume, device=args.device, progress=not args.no_progress)
    if sr:
        result = johnson.train_super_resolution(args.data, args.output, config, **common)
    else:
        result = johnson.train_style(args.data, args.styles, args.output, config, **common)
    last = result.losses[-1] if result.losses else {}
    print(f"wrote {result.model_path}; last logged loss {last.get('loss', float('nan')):.4g} at step "
          f"{last.get('step', 0)}")
    return 0


def _run_transfer(args: argparse.Namespace) -> int:
    model, _ = johnson.load_model(args.model)
    source = Path(args.image)
    pairs = ([(p, Path(args.output) / (p.stem + ".png")) for p in sorted(source.iterdir())
              if p.suffix.lower() in johnson.IMAGE_SUFFIXES] if source.is_dir() else [(source, Path(args.output))])
    if not pairs:
        raise ValueError(f"no images in {source}")
    for image_path, out_path in pairs:
        _check_output(str(out_path), [str(image_path)])
        out = johnson.stylize_feedforward(model, image_path, style=args.style, all_styles=args.all_styles,
                                          device=args.device)
        if out.shape[0] > 1:  # all styles: side by side
            out = torch.cat(list(out), dim=-1).unsqueeze(0)
        print(f"wrote {images.save_image(out, out_path, protected=[image_path])}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in johnson.IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images in {args.data}")
    hr = {p.stem: images.load_image(p) for p in files}
    upscale = None
    if args.model:
        model, _ = johnson.load_model(args.model)
        upscale = lambda lr: johnson.stylize_feedforward(model, lr, device=args.device).cpu()  # noqa: E731
    report = metrics.evaluate_sr(hr, args.factor, upscale)
    print(f"| image | PSNR-Y (dB) | SSIM-Y |  ({'model ' + args.model if args.model else 'bicubic'}, x{args.factor})")
    for name, row in report["per_image"].items():
        print(f"| {name} | {row['psnr_y']:.2f} | {row['ssim_y']:.4f} |")
    print(f"| mean | {report['mean']['psnr_y']:.2f} | {report['mean']['ssim_y']:.4f} |")
    return 0


def _common_kwargs(args: argparse.Namespace) -> dict:
    return dict(style_blend_weights=args.style_blend_weights, style_layers=args.style_layers,
                style_layer_weights=args.style_layer_weights, style_weight=args.style_weight,
                tv_weight=args.tv_weight, optimizer=args.optimizer, iterations=args.iterations, lr=args.lr,
                arch=args.arch, weights=args.weights, pooling=args.pooling, seed=args.seed, device=args.device,
                autocast=args.autocast, progress=not args.no_progress, save_every=args.save_every,
                save_path=args.save_path)


def _check_output(output: str, inputs: Sequence[str]) -> None:
    """Fail before any work when the output would overwrite an input."""
    out = Path(output).resolve()
    for path in inputs:
        if os.path.exists(path) and Path(path).resolve() == out:
            raise ValueError(f"output {output} is the input {path}; choose another path")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input prints ``error: ...`` and returns 2, Ctrl-C returns 130."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
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
        demo.run(Path(args.output), size=args.size, iterations=args.iterations, weights=args.weights,
                 device=args.device)
        return 0
    if args.command == "dip":
        return _run_dip(args)
    if args.command in ("train", "transfer", "evaluate-sr"):
        return {"train": _run_train, "transfer": _run_transfer, "evaluate-sr": _run_evaluate}[args.command](args)
    inputs = [*getattr(args, "styles", []), getattr(args, "content", "")]
    _check_output(args.output, inputs)
    with pk.use_backend(args.backend):
        if args.command == "stylize":
            image, history = gatys.stylize(
                args.content, args.styles, size=args.size, style_scale=args.style_scale,
                multiscale=args.multiscale, content_layers=args.content_layers,
                content_weight=args.content_weight, init=args.init, preserve_colors=args.preserve_colors,
                **_common_kwargs(args))
        else:
            size = args.size[0] if len(args.size) == 1 else tuple(args.size[:2])
            image, history = gatys.synthesize_texture(args.styles, size, style_size=args.style_size,
                                                      **_common_kwargs(args))
    saved = images.save_image(image, args.output, protected=[p for p in inputs if p])
    print(f"wrote {saved} ({len(history.loss)} iterations, final loss {history.loss[-1]:.4g}, "
          f"{history.time[-1]:.1f} s)" if history.loss else f"wrote {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
