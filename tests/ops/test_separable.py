import pytest
import torch

from s4vision.ops import fft_conv_nd
from s4vision.ops.separable import (
    choose_separable_path,
    conv_along_axis,
    separable_conv_nd,
    separable_kernel,
    toeplitz_matrix,
)

PATHS = ["toeplitz", "fft", "fft_nd", "auto"]
CASES = [
    # (spatial sizes, per-axis kernel sizes)
    ((9,), (17,)),  # global
    ((6,), (3,)),  # short kernel
    ((4,), (21,)),  # kernel larger than the global extent
    ((1,), (5,)),  # single sample
    ((7, 10), (13, 19)),
    ((5, 8), (3, 27)),
    ((12, 1), (23, 1)),
    ((3, 4, 5), (5, 7, 9)),
    ((4, 2, 3), (3, 9, 1)),
    ((16, 21), (31, 41)),  # long enough for the copy-free Toeplitz passes
    ((17, 16, 18), (33, 5, 35)),
]


def factors(ksizes, rank, channels=3):
    return [torch.randn(rank, channels, K, dtype=torch.float64) for K in ksizes]


def test_separable_kernel_is_sum_of_outer_products():
    ks = factors((3, 5, 7), rank=2)
    dense = separable_kernel(ks)
    ref = sum(torch.einsum("ci,cj,ck->cijk", ks[0][r], ks[1][r], ks[2][r]) for r in range(2))
    torch.testing.assert_close(dense, ref)
    torch.testing.assert_close(separable_kernel([k[0] for k in ks]), torch.einsum("ci,cj,ck->cijk", *[k[0] for k in ks]))


@pytest.mark.parametrize("sizes,ksizes", CASES)
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("path", PATHS)
def test_paths_match_fft_conv_nd(sizes, ksizes, rank, path):
    u = torch.randn(2, 3, *sizes, dtype=torch.float64)
    ks = factors(ksizes, rank)
    ref = fft_conv_nd(u, separable_kernel(ks))
    torch.testing.assert_close(separable_conv_nd(u, ks, path=path), ref)


def test_mixed_per_axis_path_and_rank1_factors():
    u = torch.randn(2, 3, 6, 11, dtype=torch.float64)
    ks = [torch.randn(3, 11, dtype=torch.float64), torch.randn(3, 21, dtype=torch.float64)]
    ref = fft_conv_nd(u, separable_kernel(ks))
    for path in [("toeplitz", "fft"), ("fft", "toeplitz")]:
        torch.testing.assert_close(separable_conv_nd(u, ks, path=path), ref)


@pytest.mark.parametrize("path", ["toeplitz", "fft", "fft_nd"])
def test_gradients_match_fft_conv_nd(path):
    u = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    ks = [torch.randn(2, 3, K, dtype=torch.float64, requires_grad=True) for K in (9, 13)]
    g = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    got = torch.autograd.grad(separable_conv_nd(u, ks, path=path), [u, *ks], g)
    ref = torch.autograd.grad(fft_conv_nd(u, separable_kernel(ks)), [u, *ks], g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("sizes,ksizes", [((16, 21), (31, 41)), ((17, 16, 18), (33, 5, 35)), ((3, 4), (5, 7))])
def test_toeplitz_forward_same_with_and_without_autograd(sizes, ksizes):
    """Without autograd the Toeplitz passes run one sample at a time in place (no broadcast copy
    of the matrices); with it, as one broadcast matmul. Both equal the N-d FFT convolution."""
    u = torch.randn(3, 3, *sizes, dtype=torch.float64)
    ks = factors(ksizes, rank=2)
    ref = fft_conv_nd(u, separable_kernel(ks))
    with torch.no_grad():
        plain = separable_conv_nd(u, ks, path="toeplitz")
    tracked = separable_conv_nd(u.requires_grad_(), ks, path="toeplitz")
    assert tracked.requires_grad
    torch.testing.assert_close(plain, ref)
    torch.testing.assert_close(tracked.detach(), ref)


def test_toeplitz_matrix_against_loop():
    k = torch.randn(2, 7, dtype=torch.float64)
    L = 5
    T = toeplitz_matrix(k, L)
    ref = torch.zeros(2, L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(L):
            if 0 <= i - j + 3 < 7:
                ref[:, i, j] = k[:, i - j + 3]
    torch.testing.assert_close(T, ref)
    # A kernel longer than 2L - 1 is cropped; a shorter one zero-padded.
    torch.testing.assert_close(toeplitz_matrix(torch.nn.functional.pad(k, (4, 4)), L), ref)
    torch.testing.assert_close(toeplitz_matrix(k, 9)[:, 2:7, 2:7], ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_toeplitz_matrix_flushes_negligible_taps(dtype):
    """Taps below eps**2 of the kernel's largest (SSM tails reach subnormal numbers) become
    exact zeros; every other tap is kept bit for bit, its gradient too."""
    eps = torch.finfo(dtype).eps
    L = 40
    t = torch.arange(-(L - 1), L, dtype=torch.float64)
    decay = torch.tensor([[2.5], [0.3]], dtype=torch.float64)  # the first reaches ~1e-43 at the ends
    k = (torch.exp(-decay * t.abs()) * torch.cos(0.7 * t)).to(dtype).requires_grad_()
    T = toeplitz_matrix(k, L)
    kept = k.detach().abs() >= eps * eps * k.detach().abs().amax(-1, keepdim=True)
    assert not kept[0].all() and kept[1].all()
    tiny = torch.finfo(dtype).tiny
    assert not ((T != 0) & (T.abs() < tiny)).any()  # no subnormal entries
    # The matrix of the kernel with the negligible taps zeroed, built by a loop.
    ref = torch.zeros(2, L, L, dtype=dtype)
    for i in range(L):
        for j in range(L):
            tap = i - j + L - 1
            ref[:, i, j] = torch.where(kept[:, tap], k.detach()[:, tap], torch.zeros((), dtype=dtype))
    assert torch.equal(T.detach(), ref)
    T.sum().backward()
    counts = torch.tensor([L - abs(x) for x in range(-(L - 1), L)], dtype=dtype)
    assert torch.equal(k.grad, torch.where(kept, counts, torch.zeros((), dtype=dtype)))
    # The change to a convolution is far below one rounding step: against the exact fp64 product
    # of the unflushed kernel (no gradient reaches a flushed tap, but its value was negligible).
    u = torch.randn(3, 2, L, dtype=torch.float64)
    exact = torch.einsum("cml,bcl->bcm", toeplitz_matrix(k.detach().double(), L), u)
    got = torch.einsum("cml,bcl->bcm", T.detach().double(), u)
    assert (got - exact).abs().max() <= L * eps * eps * k.detach().abs().max() * u.abs().max()


def test_s4nd_matrices_have_no_subnormal_entries():
    """The S4ND layer's Toeplitz matrices on a long axis (strongly decaying modes): their tails
    would otherwise be subnormal (10-100x slower GEMMs on CPU)."""
    from s4vision.layers import S4ND

    layer = S4ND(8, ndim=2, d_state=16, activation=None, out_proj=None, l_max=224, dt_min=0.5, dt_max=1.0).eval()
    sizes = (224, 224)
    with torch.no_grad():
        factors = layer.kernel_factors(sizes)
        matrices = layer._matrices(sizes, layer.grid.rates(sizes))
    tiny = torch.finfo(torch.float32).tiny
    assert any(((k != 0) & (k.abs() < tiny)).any() for k in factors)  # the kernels do reach them
    assert all(not ((m != 0) & (m.abs() < tiny)).any() for m in matrices)


@pytest.mark.parametrize("L,K,stride", [(12, 23, 4), (13, 5, 4), (7, 13, 2), (6, 3, 6), (9, 31, 3)])
def test_pooled_toeplitz_matrix_is_avg_pool_of_the_convolution(L, K, stride):
    """Pooled matrix times u == avg_pool1d of the zero-padded convolution of u (torch's conv1d)."""
    k = torch.randn(3, K, dtype=torch.float64)
    u = torch.randn(4, 3, L, dtype=torch.float64)
    pad = (K - 1) // 2
    # conv1d correlates: flip the kernel; pad so that output i is centred on input i (crop to L).
    full = torch.nn.functional.conv1d(torch.nn.functional.pad(u, (pad, pad)), k.flip(-1).unsqueeze(1), groups=3)
    expected = torch.nn.functional.avg_pool1d(full[..., :L], stride)
    T = toeplitz_matrix(k, L, stride)
    assert T.shape == (3, L // stride, L)
    torch.testing.assert_close(torch.einsum("cml,bcl->bcm", T, u), expected)


@pytest.mark.parametrize("method", ["toeplitz", "fft"])
@pytest.mark.parametrize("dim", [2, 3, -1])
def test_conv_along_axis(method, dim):
    u = torch.randn(2, 3, 6, 4, 5, dtype=torch.float64)
    k = torch.randn(3, 7, dtype=torch.float64)
    ones = [torch.ones(3, 1, dtype=torch.float64)] * 3
    d = dim % 5
    ks = list(ones)
    ks[d - 2] = k
    torch.testing.assert_close(conv_along_axis(u, k, dim, method), fft_conv_nd(u, separable_kernel(ks)))


def test_runs_in_fp32_under_autocast():
    u = torch.randn(2, 4, 8, 8)
    ks = [torch.randn(4, 15), torch.randn(4, 15)]
    ref = fft_conv_nd(u, separable_kernel(ks))
    for path in PATHS:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = separable_conv_nd(u, ks, path=path)
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


def test_cost_model_choices():
    # Short axes of vision feature maps: Toeplitz; long axes: FFT; the model is deterministic.
    assert choose_separable_path((32, 32), (63, 63)) == ("toeplitz", "toeplitz")
    assert choose_separable_path((56, 56), (111, 111)) == ("toeplitz", "toeplitz")
    assert choose_separable_path((4096,), (8191,)) in ("fft_nd", ("fft",))
    assert choose_separable_path((8, 1024), (15, 2047)) == ("toeplitz", "fft")
    # Many ranks: one N-d FFT beats rank-many separable passes.
    assert choose_separable_path((256, 256), (511, 511), rank=64) == "fft_nd"


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(u=(1, 3, 5, 5), ks=[(3, 4), (3, 3)]), ValueError, "odd"),
        (dict(u=(1, 3, 5, 5), ks=[(3, 3)]), ValueError, "rank 3"),
        (dict(u=(1, 2, 5, 5), ks=[(3, 3), (3, 3)]), ValueError, "channels"),
        (dict(u=(1, 3, 5, 5), ks=[(2, 3, 3), (1, 3, 3)]), ValueError, "disagree"),
        (dict(u=(1, 3, 5, 5), ks=[(3, 3), (3, 3)], path="dense"), ValueError, "path"),
        (dict(u=(1, 3, 5, 5), ks=[(3, 3), (3, 3)], path=("fft",)), ValueError, "per-axis"),
    ],
)
def test_errors(kwargs, error, match):
    u = torch.randn(kwargs["u"])
    ks = [torch.randn(s) for s in kwargs["ks"]]
    with pytest.raises(error, match=match):
        separable_conv_nd(u, ks, path=kwargs.get("path", "auto"))


def test_type_errors():
    with pytest.raises(TypeError):
        separable_conv_nd(torch.randn(1, 3, 5), torch.randn(3, 3))
    with pytest.raises(TypeError, match="real"):
        separable_conv_nd(torch.randn(1, 3, 5), [torch.randn(3, 3, dtype=torch.complex64)])


@pytest.mark.device
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("sizes,ksizes", [((20, 24), (39, 47)), ((7, 10), (13, 19)), ((5, 6, 7), (9, 11, 13))])
def test_paths_on_the_test_device(device, path, sizes, ksizes):
    """float32 on the test device against the float64 CPU reference, with gradients."""
    u = torch.randn(2, 3, *sizes, dtype=torch.float64)
    ks = factors(ksizes, rank=2)
    g = torch.randn(2, 3, *sizes, dtype=torch.float64)
    leaves = [t.float().to(device).requires_grad_() for t in (u, *ks)]
    y = separable_conv_nd(leaves[0], leaves[1:], path=path)
    assert y.device.type == device.type and y.dtype == torch.float32
    grads = torch.autograd.grad((y * g.float().to(device)).sum(), leaves)
    ref_leaves = [t.clone().requires_grad_() for t in (u, *ks)]
    ref = fft_conv_nd(ref_leaves[0], separable_kernel(ref_leaves[1:]))
    ref_grads = torch.autograd.grad((ref * g).sum(), ref_leaves)
    torch.testing.assert_close(y.double().cpu(), ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-3, rtol=1e-3)
