"""Memoising kernels computed from parameters while a module is in eval mode."""
from __future__ import annotations

from typing import Callable, Hashable

import torch
from torch import nn

__all__ = ["EvalKernelCache"]


class EvalKernelCache:
    """Memoises a kernel computed from a module's parameters while the module is in eval mode.

    Entries are keyed by a hashable key (sizes, rates) and invalidated when any parameter of
    the module changes (its storage or its in-place version counter), or when the module
    goes back to training. Nothing is cached while autograd records (the kernel must carry a
    graph then), nor when a parameter is an inference tensor, which has no version counter to
    key on (e.g. one substituted by ``functional_call`` under ``torch.inference_mode``). Under
    ``torch.inference_mode`` the cache works as under ``torch.no_grad``; its entries are then
    inference tensors, which later no-grad calls may read.

    Edit parameters in place under ``torch.no_grad()`` (``p.add_(...)``, ``p.copy_(...)``, an
    optimiser step, ``load_state_dict``): those bump the version counter. An edit through
    ``p.data`` bypasses it, so call :meth:`clear` (or switch the module to training and back
    with a call in between) after one.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: dict = {}

    def clear(self) -> None:
        self._entries.clear()

    def __call__(self, module: nn.Module, key: Hashable, fn: Callable[[], object]):
        if torch.compiler.is_compiling() or module.training or torch.is_grad_enabled():
            self._entries.clear()
            return fn()
        params = list(module.parameters())
        if any(p.is_inference() for p in params):
            return fn()
        version = tuple((p.data_ptr(), p._version) for p in params)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = fn()
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (version, value)
        return value
