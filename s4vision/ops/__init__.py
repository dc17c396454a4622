"""Pure tensor operations with no parameters."""
from .fftconv import fft_conv, fft_conv_nd, next_fast_len

__all__ = ["fft_conv", "fft_conv_nd", "next_fast_len"]
