"""Pure tensor operations with no parameters."""
from .fftconv import fft_conv, fft_conv_nd, next_fast_len
from .scan import linear_scan
from .grids import cell_centres, kernel_offsets, offset_grid
from .separable import choose_separable_path, conv_along_axis, separable_conv_nd, separable_kernel, toeplitz_matrix

__all__ = ["fft_conv", "fft_conv_nd", "next_fast_len", "linear_scan"]
__all__ += ["cell_centres", "kernel_offsets", "offset_grid", "choose_separable_path", "conv_along_axis",
            "separable_conv_nd", "separable_kernel", "toeplitz_matrix"]
