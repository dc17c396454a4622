"""Pure tensor operations with no parameters."""
from .fftconv import fft_conv, fft_conv_nd, next_fast_len
from .pointwise import pointwise_conv
from .scan import linear_scan
from .separable import choose_separable_path, conv_along_axis, separable_conv_nd, separable_kernel, toeplitz_conv_nd, toeplitz_matrix

__all__ = ["fft_conv", "fft_conv_nd", "next_fast_len", "linear_scan", "pointwise_conv"]
__all__ += ["choose_separable_path", "conv_along_axis",
            "separable_conv_nd", "separable_kernel", "toeplitz_conv_nd", "toeplitz_matrix"]
