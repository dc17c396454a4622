import pytest
import torch
import torch.nn.functional as F

from s4vision.ops import fft_conv, next_fast_len


@pytest.mark.parametrize("L,Lk", [(1, 1), (16, 16), (17, 5), (10, 31), (64, 8), (100, 100)])
def test_causal_matches_conv1d(L, Lk):
    u = torch.randn(3, 4, L, dtype=torch.float64)
    k = torch.randn(4, Lk, dtype=torch.float64)
    ref = F.conv1d(F.pad(u, (Lk - 1, 0)), k.flip(-1)[:, None], groups=4)[..., :L]
    torch.testing.assert_close(fft_conv(u, k, causal=True), ref)


@pytest.mark.parametrize("L,Lk", [(1, 1), (16, 15), (17, 5), (10, 31), (33, 65), (64, 7)])
def test_centred_matches_conv1d(L, Lk):
    u = torch.randn(2, 3, L, dtype=torch.float64)
    k = torch.randn(3, Lk, dtype=torch.float64)
    ref = F.conv1d(u, k.flip(-1)[:, None], padding=Lk // 2, groups=3)
    torch.testing.assert_close(fft_conv(u, k, causal=False), ref)


def test_float32_accuracy_and_dtype():
    u = torch.randn(2, 8, 1000)
    k = torch.randn(8, 1000) / 30
    y = fft_conv(u, k)
    ref = F.conv1d(F.pad(u.double(), (999, 0)), k.double().flip(-1)[:, None], groups=8)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)


def test_bf16_input_runs_fft_in_fp32():
    u = torch.randn(2, 4, 64)
    k = torch.randn(4, 64) / 8
    y = fft_conv(u.bfloat16(), k)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, fft_conv(u.bfloat16().float(), k))


def test_gradients_match_conv1d():
    u = torch.randn(2, 3, 20, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, k: fft_conv(u, k, causal=False), (u, k))


def test_fft_len_is_the_next_power_of_two_times_a_fast_odd_part():
    from s4vision.ops.fftconv import _fft_len

    def fast(m):
        while m % 2 == 0:
            m //= 2
        return m in (1, 3, 5, 9, 15)

    for n in [1, 2, 7, 17, 63, 97, 242, 447, 1000, 4099]:
        m = _fft_len(n)
        assert m >= n and fast(m) and not any(fast(j) for j in range(n, m))
        assert n < 16 or m <= 1.25 * n
    assert _fft_len(242) == 256 and _fft_len(447) == 480


def test_next_fast_len():
    for n in [1, 7, 97, 1000, 4099]:
        m = next_fast_len(n)
        assert m >= n
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert r == 1
        assert all(not _smooth(j) for j in range(n, m))


def _smooth(j):
    for p in (2, 3, 5):
        while j % p == 0:
            j //= p
    return j == 1


@pytest.mark.parametrize(
    "u,k,causal,match",
    [
        (torch.randn(4, 10), torch.randn(4, 3), True, "rank 2"),
        (torch.randn(1, 4, 10), torch.randn(4, 3, 1), True, "rank 3"),
        (torch.randn(1, 4, 10), torch.randn(5, 3), True, "5 channels but u has 4"),
        (torch.randn(1, 4, 10), torch.randn(4, 4), False, "odd kernel length"),
        (torch.randn(1, 4, 0), torch.randn(4, 3), True, "non-empty"),
    ],
)
def test_bad_input(u, k, causal, match):
    with pytest.raises(ValueError, match=match):
        fft_conv(u, k, causal=causal)


def test_complex_input_rejected():
    with pytest.raises(TypeError, match="real"):
        fft_conv(torch.randn(1, 2, 4, dtype=torch.complex64), torch.randn(2, 3))
