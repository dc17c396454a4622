"""AntiAliasBlur: a Gaussian low-pass whose width is fixed in units of the image."""
import pytest
import torch

from s4vision.layers import AntiAliasBlur


@pytest.mark.parametrize("size", [7, 14, 28, 56])
def test_blur_width_is_fixed_in_units_of_the_image(size):
    """The filter's standard deviation, measured in units of the image, is the same at every
    resolution: ``sigma / grid`` (plus the spread of integrating over one cell)."""
    blur = AntiAliasBlur(1.0, (14, 14))
    taps = blur._taps(14 / size, None, torch.float64)  # rate = reference / size
    assert taps.sum().item() == pytest.approx(1.0)
    offsets = (torch.arange(taps.numel(), dtype=torch.float64) - taps.numel() // 2) / size
    std = (taps * offsets.square()).sum().sqrt().item()
    expected = ((1.0 / 14) ** 2 + 1 / (12 * size ** 2)) ** 0.5  # Gaussian plus one cell's box
    assert std == pytest.approx(expected, rel=0.02)


def test_blur_matches_a_direct_convolution_and_keeps_constants():
    blur = AntiAliasBlur(0.7, (10, 10))
    x = torch.randn(2, 3, 12, 9, dtype=torch.float64)
    th = blur._taps(10 / 12, None, torch.float64)
    tw = blur._taps(10 / 9, None, torch.float64)
    rh, rw = th.numel() // 2, tw.numel() // 2
    padded = torch.nn.functional.pad(x, (rw, rw, rh, rh), mode="replicate")
    expected = torch.zeros_like(x)
    for i in range(th.numel()):  # plain loops over the separable taps
        for j in range(tw.numel()):
            expected += th[i] * tw[j] * padded[:, :, i:i + 12, j:j + 9]
    torch.testing.assert_close(blur(x), expected)
    assert torch.allclose(blur(torch.full((1, 2, 5, 5), 3.0)), torch.full((1, 2, 5, 5), 3.0))
    with pytest.raises(ValueError, match="sigma"):
        AntiAliasBlur(0.0, (14, 14))
