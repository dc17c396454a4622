"""extract_features: values against a direct forward pass, shapes, caching and resume."""
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from s4vision.data import VideoFeatureDataset, VideoReader, write_video
from s4vision.engine import extract_features
from s4vision.engine import features as features_module
from s4vision.engine.features import FeatureExtractionError

pytestmark = pytest.mark.filterwarnings("ignore:no pretrained weights and no checkpoint:UserWarning")

FPS, SIZE = 8, 32
LENGTHS = {"v0.mp4": 12, "v1.mp4": 20, "v2.mp4": 9}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for name, length in LENGTHS.items():
        frames = rng.integers(0, 256, (length, 4, 4, 3), dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)
        write_video(root / name, frames, FPS)
    csv = root / "ann.csv"
    csv.write_text("path,label\nv0.mp4,3\nv1.mp4,7\nv2.mp4,1\n")
    return root, csv


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Fixed weights for test_vit, classifier included (extraction must ignore it)."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=5)
    path = tmp_path_factory.mktemp("ckpt") / "test_vit.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def reference_features(checkpoint, video, indices, tokens=False):
    """Direct forward pass of the checkpoint's model over frames decoded by hand."""
    model = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    model.load_state_dict(load_file(str(checkpoint)), strict=False)
    with VideoReader(video, size=SIZE) as reader:
        frames = reader.get_frames(indices).permute(0, 3, 1, 2).float() / 255
    x = (frames - 0.5) / 0.5  # test_vit's mean and std
    with torch.no_grad():
        return model.forward_features(x) if tokens else model(x)


def test_features_match_a_direct_forward_pass(videos, checkpoint, tmp_path):
    root, csv = videos
    index_path = extract_features(csv, tmp_path, "test_vit", checkpoint=checkpoint, size=SIZE, batch_size=5)
    index = json.loads(index_path.read_text())
    assert [entry["label"] for entry in index["videos"]] == [3, 7, 1] and index["failed"] == []
    for entry, (name, length) in zip(index["videos"], LENGTHS.items()):
        stored = load_file(str(tmp_path / entry["features"]))
        assert stored["features"].shape == (length, 64) and entry["shape"] == [length, 64]
        assert stored["frame_indices"].tolist() == list(range(length))
        assert stored["timestamps"].tolist() == pytest.approx([i / FPS for i in range(length)])  # from the decoder
        assert entry["fps"] == pytest.approx(FPS)
        torch.testing.assert_close(stored["features"], reference_features(checkpoint, root / name, range(length)))
    assert index["settings"]["weights"] == "checkpoint" and index["settings"]["checkpoint"] == str(checkpoint.resolve())

    dataset = VideoFeatureDataset(tmp_path)
    features, label, times = dataset[1]
    assert features.shape == (20, 64) and label == 7 and dataset.labels == [3, 7, 1] and times.shape == (20,)


def test_tokens_and_frame_selection(videos, checkpoint, tmp_path):
    root, csv = videos
    index = json.loads(extract_features(csv, tmp_path / "t", "test_vit", checkpoint=checkpoint, size=SIZE,
                                        num_frames=4, tokens=True).read_text())
    stored = load_file(str(tmp_path / "t" / index["videos"][1]["features"]))
    indices = [2, 7, 12, 17]  # centres of 4 segments of 20 frames
    assert stored["frame_indices"].tolist() == indices
    assert stored["features"].shape == (4, 1 + 4, 64)  # class token + (32 / 16) ** 2 patches
    torch.testing.assert_close(stored["features"], reference_features(checkpoint, root / "v1.mp4", indices, tokens=True))

    with pytest.warns(UserWarning, match="randomly initialised test_vit"):
        index = json.loads(extract_features(csv, tmp_path / "f", "test_vit", size=SIZE, fps=2.0).read_text())
    assert [entry["shape"][0] for entry in index["videos"]] == [3, 5, 2]  # duration (s) * 2
    assert [entry["fps"] for entry in index["videos"]] == pytest.approx([2.0, 2.0, 2.0])

    # A CNN's feature map becomes h * w tokens; a directory lists its videos with label -1.
    with pytest.warns(UserWarning, match="randomly initialised"):
        index = json.loads(extract_features(root, tmp_path / "c", "test_convnext", size=SIZE, num_frames=2,
                                            tokens=True).read_text())
    assert [entry["label"] for entry in index["videos"]] == [-1, -1, -1]
    assert index["videos"][0]["shape"] == [2, 1, 64]  # test_convnext reduces 32 px to 1 x 1


def test_resume_after_interruption(videos, checkpoint, tmp_path, monkeypatch):
    _, csv = videos
    kwargs = dict(model="test_vit", checkpoint=checkpoint, size=SIZE, num_frames=3)
    extracted = []
    real_extract = features_module._extract_one

    def fail_after_first(net, record, *args):
        if extracted:
            raise KeyboardInterrupt("injected")
        extracted.append(record.path)
        return real_extract(net, record, *args)

    monkeypatch.setattr(features_module, "_extract_one", fail_after_first)
    with pytest.raises(KeyboardInterrupt):
        extract_features(csv, tmp_path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s4vision.lock", "index.json", "v0.safetensors"]  # whole
    assert [e["features"] for e in json.loads((tmp_path / "index.json").read_text())["videos"]] == ["v0.safetensors"]
    first_result = load_file(str(tmp_path / "v0.safetensors"))["features"]

    def counting(net, record, *args):
        extracted.append(record.path)
        return real_extract(net, record, *args)

    extracted.clear()
    monkeypatch.setattr(features_module, "_extract_one", counting)
    index = json.loads(extract_features(csv, tmp_path, **kwargs).read_text())
    assert [p.rsplit("/", 1)[-1] for p in extracted] == ["v1.mp4", "v2.mp4"]  # v0 skipped
    assert [e["features"] for e in index["videos"]] == ["v0.safetensors", "v1.safetensors", "v2.safetensors"]
    torch.testing.assert_close(load_file(str(tmp_path / "v0.safetensors"))["features"], first_result)

    extracted.clear()
    extract_features(csv, tmp_path, **kwargs)
    assert extracted == []  # everything cached
    extract_features(csv, tmp_path, resume=False, **kwargs)
    assert len(extracted) == 3
    with pytest.raises(ValueError, match="other settings"):
        extract_features(csv, tmp_path, **(kwargs | {"num_frames": 5}))


def test_bad_videos_fail_the_run_after_the_others_unless_skipped(videos, tmp_path):
    root, _ = videos
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    csv = tmp_path / "ann.csv"
    csv.write_text(f"{root / 'v0.mp4'},0\nbroken.mp4,1\nmissing.mp4,2\n")
    with pytest.raises(FeatureExtractionError, match="2 of 3 videos could not be decoded.*skip_failed") as info:
        extract_features(csv, tmp_path / "out", "test_vit", size=SIZE, num_frames=2)
    assert {f["path"].rsplit("/", 1)[-1] for f in info.value.failed} == {"broken.mp4", "missing.mp4"}
    index = json.loads((tmp_path / "out" / "index.json").read_text())  # the good video is done and indexed
    assert len(index["videos"]) == 1 and index["videos"][0]["features"].endswith("v0.safetensors")
    assert len(index["failed"]) == 2

    with pytest.warns(RuntimeWarning, match="2 of 3 videos"):
        index_path = extract_features(csv, tmp_path / "out", "test_vit", size=SIZE, num_frames=2, skip_failed=True)
    index = json.loads(index_path.read_text())
    assert len(index["videos"]) == 1
    assert {f["path"].rsplit("/", 1)[-1] for f in index["failed"]} == {"broken.mp4", "missing.mp4"}


def test_resume_redoes_truncated_altered_and_stale_cache_files(videos, checkpoint, tmp_path, monkeypatch):
    _, csv = videos
    kwargs = dict(model="test_vit", checkpoint=checkpoint, size=SIZE, num_frames=3)
    extract_features(csv, tmp_path, **kwargs)
    originals = {name: (tmp_path / name).read_bytes() for name in ("v0.safetensors", "v1.safetensors",
                                                                    "v2.safetensors")}
    (tmp_path / "v0.safetensors").write_bytes(originals["v0.safetensors"][:-16])  # truncated
    altered = bytearray(originals["v1.safetensors"])
    altered[-1] ^= 0x01  # one bit of the data
    (tmp_path / "v1.safetensors").write_bytes(bytes(altered))
    (tmp_path / "v2.safetensors").write_bytes(originals["v0.safetensors"])  # another video's features
    (tmp_path / "index.json").write_text('{"settings": ')  # and a damaged index

    extracted = []
    real_extract = features_module._extract_one
    monkeypatch.setattr(features_module, "_extract_one",
                        lambda net, record, *args: extracted.append(record.path) or real_extract(net, record, *args))
    with pytest.warns(RuntimeWarning) as warned:
        extract_features(csv, tmp_path, **kwargs)
    messages = " ".join(str(w.message) for w in warned)
    assert "cannot read" in messages and "index.json" in messages and "3 cached feature files" in messages
    assert sorted(p.rsplit("/", 1)[-1] for p in extracted) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    for name, data in originals.items():
        assert (tmp_path / name).read_bytes() == data, name  # redone, identically
    extracted.clear()
    extract_features(csv, tmp_path, **kwargs)
    assert extracted == []  # all verified now


def test_argument_errors(videos, tmp_path):
    root, csv = videos
    with pytest.raises(ValueError, match="at most one"):
        extract_features(csv, tmp_path, "test_vit", num_frames=4, fps=2.0)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(csv, tmp_path, "test_vit", batch_size=0)
    with pytest.raises(FileNotFoundError):
        extract_features(tmp_path / "nothing.csv", tmp_path, "test_vit")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        extract_features(csv, tmp_path, "test_vit", checkpoint=tmp_path / "none.pth")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"foo": torch.zeros(1)}, str(wrong))
    with pytest.raises(ValueError, match="missing"):
        extract_features(csv, tmp_path, "test_vit", checkpoint=wrong)


def test_a_randomly_initialised_encoder_is_announced_recorded_and_reproducible(videos, tmp_path):
    """No weights given: a warning says so, the index says weights=random with its seed, and the
    same features come out of another run and of an encoder rebuilt from the index."""
    from s4vision.engine.features import FrameEncoder

    _, csv = videos
    with pytest.warns(UserWarning, match="randomly initialised test_convnext \\(seed 0\\)"):
        first = extract_features(csv, tmp_path / "a", "test_convnext", size=SIZE, num_frames=3)
    torch.manual_seed(123)  # the global RNG does not matter
    with pytest.warns(UserWarning):
        second = extract_features(csv, tmp_path / "b", "test_convnext", size=SIZE, num_frames=3)
    settings = json.loads(first.read_text())["settings"]
    assert settings["weights"] == "random" and settings["init_seed"] == 0
    a, b = (load_file(str(p.parent / "v1.safetensors"))["features"] for p in (first, second))
    assert torch.equal(a, b)
    encoder = FrameEncoder.from_settings(settings)
    with VideoReader(videos[0] / "v1.mp4", size=encoder.frame_size) as reader:
        indices = load_file(str(tmp_path / "a" / "v1.safetensors"))["frame_indices"]
        torch.testing.assert_close(encoder(reader.get_frames(indices)), a)


def test_class_names_are_indexed(videos, tmp_path):
    root, _ = videos
    csv = tmp_path / "named.csv"
    csv.write_text(f"{root / 'v0.mp4'},walk\n{root / 'v1.mp4'},run\n")
    with pytest.warns(UserWarning):
        index = json.loads(extract_features(csv, tmp_path / "n", "test_convnext", size=SIZE, num_frames=2).read_text())
    assert index["classes"] == ["run", "walk"] and [e["label"] for e in index["videos"]] == [1, 0]
