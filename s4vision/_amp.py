"""Switching autocast off around code that must run in full precision (kernel generation, FFTs)."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_off"]

# Looked up once: torch.compile before torch 2.12 cannot trace ``is_autocast_available`` (a graph
# break, an error under ``fullgraph=True``), but it reads this table.
_AUTOCAST_AVAILABLE = {t: torch.amp.is_autocast_available(t) for t in ("cpu", "cuda", "xpu", "mps", "hpu", "meta")}


def autocast_off(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context with autocast disabled on ``device``'s type; a no-op on devices without autocast
    (the ``meta`` device, on which models are built and shape-checked without memory)."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    available = _AUTOCAST_AVAILABLE.get(device_type)
    if available is None:
        available = torch.amp.is_autocast_available(device_type)
    # Entering an autocast context costs more than many small ops: only when autocast is on.
    if available and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
