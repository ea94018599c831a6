"""perceptual_kernels.api: the thin API over the fused ops: VGG features, images, the Gatys / Johnson / DIP
loops and the command-line tool."""
