"""tools/bench_video_long.py's design-selection split: disjoint training clips, readable caches."""
import json

import pytest
import torch
from safetensors.torch import save_file

from _helpers import load_tool
from s4vision.data import VideoFeatureDataset


def test_selection_split_holds_out_the_last_training_clips(tmp_path):
    tool = load_tool("bench_video_long")
    cache = tmp_path / "train_8fps"
    cache.mkdir()
    videos = []
    for i in range(10):
        name = f"clip_{i:05d}.safetensors"
        save_file({"features": torch.full((6, 4), float(i)), "timestamps": torch.arange(6, dtype=torch.float64) / 8},
                  str(cache / name))
        videos.append({"path": f"train_{i:05d}", "label": i % 3, "start": None, "end": None, "features": name,
                       "shape": [6, 4], "fps": 8.0})
    (cache / "index.json").write_text(json.dumps({"settings": {}, "classes": ["0", "1", "2"], "videos": videos,
                                                  "failed": []}))
    fit, score = tool.selection_split(cache / "index.json", 3)
    fitted, scored = VideoFeatureDataset(fit), VideoFeatureDataset(score)
    assert len(fitted) == 7 and len(scored) == 3
    # the features read through each split are the clips' own: the first 7, then the last 3
    assert [float(fitted.load(i)[0][0, 0]) for i in range(7)] == list(range(7))
    assert [float(scored.load(i)[0][0, 0]) for i in range(3)] == [7, 8, 9]
    assert tool.selection_split(cache / "index.json", 3) == (fit, score)  # written once, reused
    with pytest.raises(SystemExit, match="select-clips"):
        tool.selection_split(cache / "index.json", 10)
