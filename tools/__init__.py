"""Development tools (not installed): resource reports of the CUDA and Triton kernels, compiled without a GPU."""
