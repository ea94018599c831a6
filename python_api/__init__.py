"""perceptual_kernels.api: the thin API over the fused ops: VGG features, images, the Gatys / Johnson / DIP
loops and the command-line tool (``perceptual-kernels``).

>>> from perceptual_kernels.api import stylize, save_image
>>> image, history = stylize("content.jpg", ["style.jpg"], size=512)
>>> save_image(image, "out.png", protected=["content.jpg"])
"""

from .dip import add_noise, denoise, inpaint, super_resolve
from .gatys import stylize, synthesize_texture
from .images import load_image, save_image
from .johnson import stylize_feedforward, train_style, train_super_resolution
from .johnson_nets import load_model, save_model
from .metrics import evaluate_sr, imresize, psnr, psnr_y, ssim, ssim_y
from .perceptual_loss import BasicSRPerceptualLoss, PerceptualLoss
from .vgg import VGGFeatures

__all__ = [
    "BasicSRPerceptualLoss",
    "PerceptualLoss",
    "VGGFeatures",
    "add_noise",
    "denoise",
    "evaluate_sr",
    "imresize",
    "inpaint",
    "load_image",
    "load_model",
    "psnr",
    "psnr_y",
    "save_image",
    "save_model",
    "ssim",
    "ssim_y",
    "stylize",
    "stylize_feedforward",
    "super_resolve",
    "synthesize_texture",
    "train_style",
    "train_super_resolution",
]
