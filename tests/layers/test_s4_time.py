"""S4 over irregular time steps (per-sample rates): the continuous-time path.

References are independent of the layer's code: the uniform case is the layer's convolution path
at one rate; the irregular case is the continuous-time definition, each sample's input held over
its time cell and integrated against ``exp(A t)`` with a dense matrix exponential per gap.
"""
import pytest
import torch

from s4vision.layers import S4
from s4vision.layers._time_varying import bidirectional_time_varying, causal_time_varying
from s4vision.sampling import check_timestamps, frame_rates

KERNELS = [("s4d", "zoh"), ("s4d", "bilinear"), ("s4", "zoh"), ("s4", "bilinear")]


def linear_layer(kernel, disc, bidirectional, dim=3, d_state=8, channels=1):
    torch.manual_seed(0)
    return S4(dim, d_state, kernel, bidirectional=bidirectional, channels=channels, activation=None,
              out_proj=None if channels == 1 else "linear", disc=disc, dtype=torch.float64)


def continuous_system(layer):
    """``dt (H,)``, dense ``A (H, M, M)``, ``B (H, M)``, ``C (c, H, M)`` of the layer's SSM, complex128."""
    gen = layer.generator
    A = gen.dense_A() if hasattr(gen, "dense_A") else torch.diag_embed(gen.diagonal_A())
    return gen.dt(1.0), A.to(torch.complex128), gen._cplx(gen.B).to(torch.complex128), gen.output_matrix().to(torch.complex128)


def held_integral(A, B, lo, hi, t):
    """``int_lo^hi exp(A (t - s)) ds B`` for ``lo <= hi <= t`` (a dense matrix exponential per end)."""
    if hi <= lo:
        return torch.zeros_like(B)
    E = lambda tau: torch.linalg.matrix_exp(A * tau)
    return torch.linalg.solve(A, (E(t - lo) - E(t - hi)) @ B)


def irregular_times(L, seed):
    """Cumulative times of ``L`` samples with steps between 0.2 and 2.5 reference steps."""
    g = torch.Generator().manual_seed(seed)
    rates = 0.2 + 2.3 * torch.rand(L, generator=g, dtype=torch.float64)
    rates[0] = rates[1]  # the step before the first sample is the one after it
    return torch.cumsum(rates, 0), rates


def causal_reference(layer, x, times, rates):
    """``y_i = sum_j 2 Re C int_{t_j - r_j}^{t_j} exp(A (t_i - s)) ds B u_j`` over ``j <= i``, plus ``D u``:
    the ZOH definition, each input held over the step before it."""
    dt, A, B, C = continuous_system(layer)
    H, L = x.shape[1], x.shape[2]
    y = torch.zeros(x.shape[0], C.shape[0], H, L, dtype=torch.float64)
    for h in range(H):
        t, r = times * dt[h], rates * dt[h]
        for i in range(L):
            for j in range(i + 1):
                w = held_integral(A[h], B[h][:, None], t[j] - r[j], t[j], t[i])[:, 0]
                y[:, :, h, i] += 2 * (C[:, h] @ w).real[None] * x[:, h, j, None]
    return y.flatten(1, 2) + layer.D.reshape(-1, 1) * layer._per_kernel(x)


def bidirectional_reference(layer, x, times, rates):
    """Each sample held over its cell between the midpoints to its neighbours (the first and last
    cells as wide as the nearest step); the causal half integrates the cell parts before ``t_i``
    against ``C_fwd exp(A (t_i - s)) B``, the anti-causal half the parts after it against
    ``C_bwd exp(A (s - t_i)) B``."""
    dt, A, B, C = continuous_system(layer)
    C_fwd, C_bwd = C.chunk(2)
    H, L = x.shape[1], x.shape[2]
    y = torch.zeros(x.shape[0], H, L, dtype=torch.float64)
    for h in range(H):
        t = times * dt[h]
        first, last = t[0] - rates[1] * dt[h] / 2, t[-1] + rates[-1] * dt[h] / 2
        edges = torch.cat([first[None], (t[1:] + t[:-1]) / 2, last[None]])
        for i in range(L):
            for j in range(L):
                lo, hi = edges[j], edges[j + 1]
                fwd = held_integral(A[h], B[h][:, None], lo, min(hi, t[i]), t[i])[:, 0]
                # anti-causal: s -> 2 t_i - s mirrors the cell part after t_i before it
                bwd = held_integral(A[h], B[h][:, None], 2 * t[i] - hi, min(2 * t[i] - lo, t[i]), t[i])[:, 0]
                y[:, h, i] += (2 * (C_fwd[0, h] @ fwd).real + 2 * (C_bwd[0, h] @ bwd).real) * x[:, h, j]
    return y + layer.D.reshape(-1, 1) * x


@pytest.mark.parametrize("kernel, disc", KERNELS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_uniform_steps_equal_the_convolution(kernel, disc, bidirectional):
    """The time-varying recurrence at one constant rate is the layer's FFT convolution at that rate."""
    layer = linear_layer(kernel, disc, bidirectional)
    x = torch.randn(2, 3, 17, dtype=torch.float64)
    for rate in (0.5, 1.0, 2.0):
        rates = torch.full((1, 17), rate, dtype=torch.float64)
        if bidirectional:
            y = bidirectional_time_varying(layer.generator, x, rates)
        else:
            y, _ = causal_time_varying(layer.generator, x, rates)
        torch.testing.assert_close(y + layer.D.reshape(-1, 1) * x, layer(x, rate=rate), rtol=1e-9, atol=1e-10)
        # the public path with uniform per-sample rates takes the convolution
        torch.testing.assert_close(layer(x, rate=rates), layer(x, rate=rate))


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
@pytest.mark.parametrize("channels", [1, 2])
def test_causal_irregular_steps_equal_the_continuous_definition(kernel, channels):
    layer = linear_layer(kernel, "zoh", False, dim=2, d_state=6, channels=channels)
    if channels > 1:  # compare the kernel outputs before the output projection
        layer.out_proj = torch.nn.Identity()
    x = torch.randn(2, 2, 9, dtype=torch.float64)
    times, rates = irregular_times(9, seed=1)
    expected = causal_reference(layer, x, times, rates)
    torch.testing.assert_close(layer(x, rate=rates), expected, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(layer(x, rate=rates[None].expand(2, -1)), expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kernel", ["s4d", "s4"])
def test_bidirectional_irregular_steps_equal_the_continuous_definition(kernel):
    layer = linear_layer(kernel, "zoh", True, dim=2, d_state=6)
    x = torch.randn(2, 2, 8, dtype=torch.float64)
    times, rates = irregular_times(8, seed=2)
    torch.testing.assert_close(layer(x, rate=rates), bidirectional_reference(layer, x, times, rates), rtol=1e-8, atol=1e-9)


def test_uniform_times_match_the_reference_too():
    """The continuous-time references reduce to the convolution at one rate (a check on them)."""
    for bidirectional, reference in ((False, causal_reference), (True, bidirectional_reference)):
        layer = linear_layer("s4d", "zoh", bidirectional, dim=2, d_state=4)
        x = torch.randn(1, 2, 6, dtype=torch.float64)
        rates = torch.full((6,), 0.8, dtype=torch.float64)
        torch.testing.assert_close(reference(layer, x, torch.cumsum(rates, 0), rates), layer(x, rate=0.8), rtol=1e-8, atol=1e-9)


def test_rows_with_their_own_steps():
    """``(B, L)`` rates: each row is the layer applied to that row alone with its rates."""
    layer = linear_layer("s4d", "zoh", True)
    x = torch.randn(3, 3, 12, dtype=torch.float64)
    rates = torch.stack([irregular_times(12, seed=s)[1] for s in range(3)])
    y = layer(x, rate=rates)
    for b in range(3):
        torch.testing.assert_close(y[b:b + 1], layer(x[b:b + 1], rate=rates[b]))


@pytest.mark.parametrize("kernel, disc", KERNELS)
def test_stream_over_irregular_steps_equals_offline(kernel, disc):
    torch.manual_seed(0)
    layer = S4(4, 8, kernel, disc=disc, dtype=torch.float64).eval()
    x = torch.randn(2, 4, 23, dtype=torch.float64)
    _, rates = irregular_times(23, seed=3)
    expected = layer(x, rate=rates)
    g = torch.Generator().manual_seed(0)
    state, outputs, t = None, [], 0
    while t < 23:
        size = int(torch.randint(1, 7, (1,), generator=g))
        y, state = layer.stream(x[..., t:t + size], state, rate=rates[t:t + size])
        outputs.append(y)
        t += size
    torch.testing.assert_close(torch.cat(outputs, -1), expected, rtol=1e-9, atol=1e-10)
    # one sample at a time, and a stream mixing uniform chunks (convolution path) with irregular ones
    state, outputs = None, []
    for i in range(23):
        y, state = layer.step(x[..., i], state, rate=rates[i:i + 1].expand(2))
        outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, -1), expected, rtol=1e-9, atol=1e-10)
    steady = torch.full((23,), 0.6, dtype=torch.float64)
    steady[10:] = rates[10:]
    y1, state = layer.stream(x[..., :10], None, rate=steady[:10])
    y2, _ = layer.stream(x[..., 10:], state, rate=steady[10:])
    torch.testing.assert_close(torch.cat([y1, y2], -1), layer(x, rate=steady), rtol=1e-9, atol=1e-10)


def test_gradients_through_irregular_steps():
    layer = linear_layer("s4d", "zoh", True, dim=2, d_state=4)
    x = torch.randn(1, 2, 7, dtype=torch.float64, requires_grad=True)
    _, rates = irregular_times(7, seed=4)
    torch.autograd.gradcheck(lambda x, log_dt: bidirectional_time_varying(
        _with(layer.generator, log_dt), x, rates[None]), (x, layer.generator.log_dt.detach().clone().requires_grad_()))


def _with(gen, log_dt):
    """The generator with ``log_dt`` replaced by a tensor (for gradcheck)."""
    del gen.log_dt
    gen.log_dt = log_dt
    return gen


def test_frame_rates_from_timestamps_drive_the_layer():
    """Timestamps at 16 fps for a layer whose reference step is 1/8 s: rate 0.5 everywhere."""
    layer = linear_layer("s4d", "zoh", False)
    x = torch.randn(1, 3, 10, dtype=torch.float64)
    rates = frame_rates(check_timestamps(torch.arange(10, dtype=torch.float64) / 16 + 3.0), train_fps=8)
    torch.testing.assert_close(layer(x, rate=rates), layer(x, rate=0.5))


def test_bad_rates():
    layer = linear_layer("s4d", "zoh", False)
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    for bad, match in ((torch.ones(4, dtype=torch.float64), "shape"), (torch.ones(3, 5, dtype=torch.float64), "shape"),
                       (torch.tensor([1, 1, 0, 1, 1.0]), "positive"), (torch.tensor([1, 1, float("nan"), 1, 1]), "finite")):
        with pytest.raises(ValueError, match=match):
            layer(x, rate=bad)
    with pytest.raises(TypeError):
        layer(x, rate=torch.ones(5, dtype=torch.long))


# -- training paths: lean FFT convolution and kernels -------------------------------------------

from s4vision.layers._fftconv1d import fft_conv1d  # noqa: E402
from s4vision.layers._lean_kernel import lean_causal_kernel, lean_centred_kernel  # noqa: E402
from s4vision.ops import fft_conv  # noqa: E402


@pytest.mark.parametrize("L", [1, 5, 64])
@pytest.mark.parametrize("causal", [True, False])
def test_lean_fft_conv_matches_fft_conv_with_gradients(L, causal):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(3, 4, L, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(4, L if causal else 2 * L - 1, dtype=torch.float64, generator=g, requires_grad=True)
    y = fft_conv1d(u, k, 0 if causal else L - 1)
    expected = fft_conv(u, k, causal=causal)
    torch.testing.assert_close(y, expected)
    grad = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, (u, k), grad), torch.autograd.grad(expected, (u, k), grad))


@pytest.mark.parametrize("L", [1, 2, 37, 300])
def test_lean_kernels_match_the_generator_with_gradients(L):
    """The training kernels equal the generator's (values and parameter gradients), band limit included."""
    torch.manual_seed(0)
    for disc, bandlimit in (("zoh", None), ("bilinear", None), ("zoh", 0.5)):
        layer = S4(6, 16, bidirectional=True, disc=disc, bandlimit=bandlimit, dtype=torch.float64)
        gen = layer.generator
        for lean, reference in ((lean_centred_kernel(gen, L, 0.7, True), gen.centred(L, 0.7, True)),
                                (lean_causal_kernel(gen, L, 0.7), gen(L, 0.7))):
            torch.testing.assert_close(lean, reference)
            weights = torch.randn_like(lean)
            params = [p for p in gen.parameters()]
            expected = torch.autograd.grad((reference * weights).sum(), params, allow_unused=True)
            for got, want in zip(torch.autograd.grad((lean * weights).sum(), params, allow_unused=True), expected):
                if want is not None:
                    torch.testing.assert_close(got, want)
