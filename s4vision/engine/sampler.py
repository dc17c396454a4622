"""A sampler that shards across ranks, reshuffles per epoch and can start mid-epoch."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler
from ..errors import InvalidValueError

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Indices of this rank's share of an epoch, optionally skipping the first samples.

    The order of epoch ``e`` is a permutation seeded by ``seed + e`` (the identity when
    ``shuffle=False``), padded by wrapping around so that every rank gets
    ``ceil(num_samples / world_size)`` indices (``pad=False`` leaves ranks uneven and
    repeats nothing, for evaluation). ``set_epoch(e, start=k)`` makes the next iteration
    begin at the ``k``-th index of this rank's share: resuming after ``b`` batches of size
    ``B`` uses ``start=b * B`` and replays exactly the batches that were not yet seen.
    """

    def __init__(self, num_samples: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad: bool = True):
        if num_samples < 1:
            raise InvalidValueError(f"cannot sample from an empty dataset (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise InvalidValueError(f"rank {rank} is outside world_size {world_size}")
        self.num_samples = num_samples
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def per_rank(self) -> int:
        """Number of indices this rank gets in a full epoch."""
        if self.pad:
            return math.ceil(self.num_samples / self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.per_rank:
            raise InvalidValueError(f"start={start} is outside this rank's {self.per_rank} samples")
        self.epoch, self.start = epoch, start

    def _epoch_order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        if self.pad:
            total = self.per_rank * self.world_size
            order = (order * math.ceil(total / self.num_samples))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_order()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
