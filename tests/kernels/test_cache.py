"""``EvalKernelCache``: memoises a kernel in eval mode until a parameter, the mode or the key changes.

A tiny module counts how often its kernel is computed, so hits and misses are observed directly.
"""
import gc
import weakref

import pytest
import torch
from torch import nn

from s4vision.kernels.cache import EvalKernelCache


class Tiny(nn.Module):
    """``kernel(L) -> (3, L)``: ``w[:, None] * arange(L)``, computed through the cache."""

    def __init__(self, max_entries=8):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))
        self.cache = EvalKernelCache(max_entries=max_entries)
        self.calls = 0

    def _compute(self, L):
        self.calls += 1
        return self.w[:, None] * torch.arange(L)

    def forward(self, L=4):
        return self.cache(self, L, lambda: self._compute(L))


def expected(module, L=4):
    return module.w.detach()[:, None] * torch.arange(L)


def hit(module, L=4):
    """Call the module; True if the kernel came from the cache. Checks the value either way."""
    before = module.calls
    out = module(L)
    torch.testing.assert_close(out.detach(), expected(module, L))
    return module.calls == before


def test_eval_no_grad_hits():
    m = Tiny().eval()
    with torch.no_grad():
        first = m()
        assert hit(m) and m() is first
        assert not hit(m, 5) and hit(m, 5) and hit(m, 4)  # one entry per key


def test_training_mode_never_caches():
    m = Tiny()
    with torch.no_grad():
        assert not hit(m) and not hit(m)


def test_no_caching_while_autograd_records():
    m = Tiny().eval()
    with torch.no_grad():
        m()
    out = m()  # grad enabled: must recompute, with a graph
    assert m.calls == 2 and out.requires_grad
    out.sum().backward()
    assert m.w.grad is not None
    assert not hit(m) and m.calls == 3


def test_inference_mode_caches():
    m = Tiny().eval()
    with torch.inference_mode():
        assert not hit(m) and hit(m)
    with torch.no_grad():  # entries made under inference_mode are readable afterwards
        assert hit(m)


def test_inference_tensor_parameters_are_not_cached():
    """A parameter substituted by ``functional_call`` under inference mode has no version counter."""
    m = Tiny().eval()
    with torch.inference_mode():
        w = torch.randn(3)
        for _ in range(2):
            out = torch.func.functional_call(m, {"w": w}, (4,))
            torch.testing.assert_close(out, w[:, None] * torch.arange(4))
    assert m.calls == 2


def step_optimizer(m):
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.train()
    m().square().sum().backward()
    opt.step()
    m.eval()


def add_in_place(m):
    with torch.no_grad():
        m.w.add_(1)


def load_state_dict(m):
    m.load_state_dict({"w": torch.randn(3)})


def replace_data(m):
    m.w.data = torch.randn(3)  # new storage, version counter untouched


def clear(m):
    m.cache.clear()


@pytest.mark.parametrize(
    "change", [step_optimizer, add_in_place, load_state_dict, replace_data, clear]
)
def test_invalidation(change):
    m = Tiny().eval()
    with torch.no_grad():
        m()
        assert hit(m)
    old = m.w.detach().clone()
    change(m)
    with torch.no_grad():
        assert not hit(m)  # hit() also checks the value against the current parameter
        assert hit(m)
    if change is not clear:
        assert not torch.equal(m.w.detach(), old)


def test_training_drops_the_entries():
    """Nothing is held for eval while training: the cached kernel is freed by a training call."""
    m = Tiny().eval()
    with torch.no_grad():
        cached = weakref.ref(m())
        assert hit(m)
    m.train()
    m()
    gc.collect()
    assert cached() is None
    m.eval()
    with torch.no_grad():
        assert not hit(m)


def test_max_entries_bounds_what_is_kept():
    m = Tiny(max_entries=2).eval()
    alive = []
    with torch.no_grad():
        for L in range(1, 21):
            alive.append(weakref.ref(m(L)))
        assert hit(m, 20)  # the newest entry is kept
        gc.collect()
        assert sum(r() is not None for r in alive) <= 2
        before = m.calls
        for L in (18, 19, 20):  # three keys cannot all be cached in two entries
            m(L)
        assert m.calls > before
