
from .video import VideoDecodeError, VideoReader, available_backends, write_video
from .clips import (
    ClipSampler,
    RandomSegmentSampler,
    SlidingWindowSampler,
    UniformClipSampler,
    segment_indices,
    sliding_windows,
    uniform_indices,
)
from .video_dataset import (
    BadVideoFilesError,
    VideoClipDataset,
    VideoFeatureDataset,
    VideoRecord,
    normalize_frames,
    read_annotations,
)
from .video_benchmark import make_benchmark
from .images import (
    ImageDataset,
    TensorImageDataset,
    TransformedDataset,
    create_image_dataset,
    create_image_transform,
    list_image_datasets,
)
