"""Switching autocast off around code that must run in full precision (kernel generation, FFTs)."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_off"]


def autocast_off(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context with autocast disabled on ``device``'s type; a no-op on devices without autocast
    (the ``meta`` device, on which models are built and shape-checked without memory)."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    # Entering an autocast context costs more than many small ops: only when autocast is on.
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
