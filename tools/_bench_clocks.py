"""Clocks shared by the benchmarks in ``tools/``: one run measures every clock, round by round.

A clock is ``KIND@THREADS``:

- ``wall@2``: elapsed time with two torch threads, the figure a user sees on an idle 2-core
  machine (and on a GPU, with the device synchronised around each call).
- ``cpu@1``: CPU time of the calling thread with one torch thread. With one thread every
  operation (forward and backward) runs in the calling thread, so this counts exactly the
  benchmark's own work however busy the machine is; it is the figure to compare when other
  jobs share the cores.

Rounds are interleaved: each round times every method under every clock before the next
round starts, so a change in machine load affects all of them alike.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

__all__ = ["Clock", "DEFAULT_CLOCKS", "parse_clocks", "machine_info", "side_by_side"]

DEFAULT_CLOCKS = ("wall@2", "cpu@1")


@dataclass(frozen=True)
class Clock:
    """A timer and the number of torch threads it runs with."""

    kind: str  # "wall" or "cpu"
    threads: int
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.threads}"

    @property
    def label(self) -> str:
        unit = "wall clock" if self.kind == "wall" else "CPU time"
        return f"{self.threads}-thread {unit}" + (f" ({self.device})" if self.device != "cpu" else "")

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], object]) -> float:
        """Seconds ``fn()`` takes on this clock."""
        torch.set_num_threads(self.threads)
        timer = time.perf_counter if self.kind == "wall" else time.thread_time
        self._sync()
        start = timer()
        fn()
        self._sync()
        return timer() - start


def parse_clocks(specs: List[str], device: str = "cpu") -> List[Clock]:
    """``["wall@2", "cpu@1"]`` -> clocks; ``cpu`` needs one thread and a CPU device."""
    clocks = []
    for spec in specs:
        kind, _, threads = spec.partition("@")
        if kind not in ("wall", "cpu") or not threads.isdigit() or int(threads) < 1:
            raise SystemExit(f"a clock is wall@THREADS or cpu@1, got {spec!r}")
        if kind == "cpu" and (int(threads) != 1 or device != "cpu"):
            raise SystemExit(f"{spec}: CPU time counts the calling thread only; use cpu@1 on a CPU device")
        clocks.append(Clock(kind, int(threads), device))
    return clocks


def machine_info(clocks: List[Clock], device: Optional[str] = None) -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(
        platform=platform.platform(), processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
        gpu=gpu, device=device or "cpu", torch=torch.__version__, clocks=[c.name for c in clocks],
        load_average=list(os.getloadavg()),
    )


def side_by_side(left: Sequence[str], left_header: str, clocks: List[Clock], cell_header: str,
                 cell: Callable[[int, Clock], str]) -> str:
    """A text table: for row ``i`` its ``left[i]`` columns, then ``cell(i, clock)`` per clock."""
    head, sub = left_header, " " * len(left_header)
    for c in clocks:
        head += f" | {c.label:^{len(cell_header)}s}"
        sub += f" | {cell_header}"
    lines = [head, sub, "-" * len(sub)]
    lines += [row + "".join(f" | {cell(i, c)}" for c in clocks) for i, row in enumerate(left)]
    return "\n".join(lines)
