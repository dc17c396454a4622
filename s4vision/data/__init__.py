"""Datasets: images (resolution set by the transform), video decoding, clip sampling, benchmarks."""

from .video import VideoDecodeError, VideoReader, available_backends, write_video
from .clips import (
    Clip,
    ClipSampler,
    RandomSegmentSampler,
    ShortVideoError,
    SlidingWindowSampler,
    UniformClipSampler,
    WindowSampler,
    segment_indices,
    sliding_windows,
    uniform_indices,
)
from .annotations import ANNOTATION_FORMATS, UnknownClassError, VideoRecord, read_annotations
from .video_dataset import (
    BadVideoFilesError,
    VideoClipDataset,
    VideoFeatureDataset,
    VideoSample,
    normalize_frames,
)
from .video_benchmark import make_benchmark
from .mnist5k import load_mnist5k, split_per_class
from .images import (
    ImageDataset,
    TensorImageDataset,
    TransformedDataset,
    create_image_dataset,
    create_image_transform,
    list_image_datasets,
)

from .constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, MNIST_MEAN, MNIST_STD

__all__ = [
    "VideoDecodeError", "VideoReader", "available_backends", "write_video",
    "Clip", "ClipSampler", "RandomSegmentSampler", "ShortVideoError", "SlidingWindowSampler", "UniformClipSampler",
    "WindowSampler", "segment_indices", "sliding_windows", "uniform_indices",
    "ANNOTATION_FORMATS", "UnknownClassError", "VideoRecord", "read_annotations",
    "BadVideoFilesError", "VideoClipDataset", "VideoFeatureDataset", "VideoSample", "normalize_frames", "make_benchmark", "load_mnist5k", "split_per_class",
    "ImageDataset", "TensorImageDataset", "TransformedDataset", "create_image_dataset", "create_image_transform",
    "list_image_datasets",
    "MNIST_MEAN", "MNIST_STD", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
]
