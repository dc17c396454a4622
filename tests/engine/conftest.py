"""Fixtures shared by the video engine tests: a tiny long-range moving-digits benchmark written as
real H.264 files with PyAV, and its frame features (the routes' configs: ``_helpers.route_config``)."""
import warnings

import pytest

import _helpers
from s4vision.cli import main

from s4vision.data import make_benchmark
from s4vision.engine.features import extract_features

from _helpers import VIDEO_FPS as FPS, VIDEO_FRAMES as FRAMES, VIDEO_SIZE as SIZE

TRAIN_VIDEOS, VAL_VIDEOS = 12, 6


@pytest.fixture(scope="session")
def video_bench(tmp_path_factory):
    """``root`` holding train.csv / val.csv and their videos, and their feature caches
    ``root/features/<split>`` (timm's test_convnext, random initialisation)."""
    root = tmp_path_factory.mktemp("lrmnist")
    for split, count in (("train", TRAIN_VIDEOS), ("val", VAL_VIDEOS)):
        make_benchmark(root, count, FRAMES, fps=FPS, size=SIZE, head_seconds=1.0, split=split)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the encoder is randomly initialised, on purpose
            extract_features(root / f"{split}.csv", root / "features" / split, "test_convnext", size=SIZE,
                             batch_size=64)
    return root


@pytest.fixture(scope="session")
def video_runs(video_bench, tmp_path_factory):
    """Each route trained for two epochs through ``s4vision train``: ``{route: run folder}``."""
    tmp = tmp_path_factory.mktemp("routes")
    done = {}
    for route in (1, 2, 3):
        config = _helpers.write_config(tmp / f"route{route}.yaml",
                                       _helpers.route_config(route, video_bench, tmp / f"run{route}"))
        assert main(["train", str(config)]) == 0
        done[route] = tmp / f"run{route}"
    return done
