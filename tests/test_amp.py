"""autocast_off: full precision inside autocast, a no-op outside it, and traceable by torch.compile."""
import contextlib

import pytest
import torch

import _helpers
from s4vision import _amp
from s4vision._amp import autocast_off


def test_switches_autocast_off_inside_autocast_and_back_on_after():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with autocast_off("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert (a @ b).dtype == torch.float32
        assert (a @ b).dtype == torch.bfloat16


def test_no_context_when_autocast_is_off_and_none_on_meta():
    assert isinstance(autocast_off(torch.device("cpu")), contextlib.nullcontext)
    assert isinstance(autocast_off("meta"), contextlib.nullcontext)
    with autocast_off("meta"):
        assert torch.empty(2, device="meta").dtype == torch.float32


def test_known_device_types_never_ask_torch(monkeypatch):
    """torch.compile before torch 2.12 cannot trace ``is_autocast_available`` (fullgraph fails):
    the usual device types come from the table made at import."""
    def untraceable(device_type):
        raise AssertionError(f"is_autocast_available({device_type!r}) called")

    monkeypatch.setattr(torch.amp, "is_autocast_available", untraceable)
    for device in ("cpu", "cuda", "meta"):
        autocast_off(device)
    with pytest.raises(AssertionError, match="called"):
        autocast_off("privateuseone")  # an unknown type is still looked up


@_helpers.needs_compile
def test_compiles_in_one_graph():
    def f(x):
        with autocast_off(x.device):
            return x @ x

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    x = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled(x).dtype == torch.float32
    assert set(_amp._AUTOCAST_AVAILABLE) >= {"cpu", "cuda"}
