"""Annotation layouts of published long-video benchmarks, written here in their published form."""
import json

import pytest

from s4vision.data import UnknownClassError, read_annotations
from s4vision.data.annotations import detect_format


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_kinetics_csv_finds_trimmed_clips_or_cuts_the_full_video(tmp_path):
    """Kinetics-400/600/700: label,youtube_id,time_start,time_end,split[,is_cc]; clips named
    <youtube_id>_<start:06d>_<end:06d> in a folder per label (the official downloader), or the
    untrimmed <youtube_id> video cut to the span."""
    ann = tmp_path / "kinetics400" / "train.csv"
    ann.parent.mkdir()
    ann.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                   '"air drumming",--nQbRBEz2s,104,114,train,0\n'
                   "abseiling,-3B32lodo2M,59,69,val,0\n"
                   "abseiling,zzzFULLzzz0,5,15,train,0\n")
    root = tmp_path / "videos"
    trimmed = _touch(root / "air drumming" / "--nQbRBEz2s_000104_000114.mp4")
    full = _touch(root / "zzzFULLzzz0.webm")
    records, classes = read_annotations(ann, root, subset="train")
    assert classes == ["abseiling", "air drumming"]
    assert [(r.path, r.label, r.start, r.end) for r in records] == [
        (str(trimmed), 1, None, None),  # the clip is already cut to its span
        (str(full), 0, 5.0, 15.0),
    ]
    records, _ = read_annotations(ann, root, subset="val", classes=classes)
    assert [(r.label, r.path) for r in records] == [
        (0, str(root / "abseiling" / "-3B32lodo2M_000059_000069.mp4"))]  # missing: the probe will name it
    assert detect_format(ann) == "kinetics"


def test_lvu_task_files(tmp_path):
    """LVU (lvu_1.0/<task>/<split>.csv): a header, then '<label> <name> <youtube_id> <imdb_id>'."""
    task = tmp_path / "lvu_1.0" / "relationship"
    task.mkdir(parents=True)
    (task / "train.csv").write_text("relationship_label relationship youtube_id imdb_id\n"
                                    "2 wife_husband Xf2Gq7C9a1c tt0118715\n"
                                    "0 friend 7qLhEXOB8sI tt0095016\n"
                                    "2 wife_husband b3HwlK-6sQ0 tt0119116\n")
    video = _touch(tmp_path / "videos" / "7qLhEXOB8sI.mkv")
    records, classes = read_annotations(task / "train.csv", tmp_path / "videos", format="auto")
    assert detect_format(task / "train.csv") == "lvu"
    assert classes == ["friend", "1", "wife_husband"]  # class 1 appears in no line of this split
    assert [r.label for r in records] == [2, 0, 2]
    assert records[1].path == str(video) and records[0].path == str(tmp_path / "videos" / "Xf2Gq7C9a1c.mp4")

    (task / "view.csv").write_text("view_count youtube_id imdb_id\n1234567 Xf2Gq7C9a1c tt0118715\n")
    with pytest.raises(ValueError, match="view.csv: the LVU regression tasks"):
        read_annotations(task / "view.csv", format="lvu")
    (task / "odd.csv").write_text("label name youtube_id imdb_id\n0.5 x Xf2Gq7C9a1c tt0118715\n")
    with pytest.raises(ValueError, match=r"odd.csv:2: LVU label '0.5' is not a class index"):
        read_annotations(task / "odd.csv", format="lvu")


def test_coin_json(tmp_path):
    """COIN.json: {"database": {youtube_id: {"class", "subset", "recipe_type", "annotation": [...]}}};
    videos in <root>/<recipe_type>/<youtube_id>.mp4 (the official download script)."""
    database = {
        "LtRSn-ntcLY": {"duration": 131.0, "class": "ReplaceCDDriveWithSSD", "subset": "training", "recipe_type": 131,
                        "start": 56.6, "end": 85.7,
                        "annotation": [{"id": "212", "segment": [60.0, 69.0], "label": "take out the CD drive"}]},
        "abc_def-123": {"duration": 50.0, "class": "ChangeCarTire", "subset": "testing", "recipe_type": 13,
                        "start": 1.0, "end": 40.0, "annotation": []},
        "xyz": {"duration": 20.0, "class": "ChangeCarTire", "subset": "training", "recipe_type": 13,
                "start": 0.0, "end": 20.0, "annotation": []},
    }
    ann = tmp_path / "COIN.json"
    ann.write_text(json.dumps({"database": database}))
    clip = _touch(tmp_path / "videos" / "131" / "LtRSn-ntcLY.mp4")
    records, classes = read_annotations(ann, tmp_path / "videos", subset="train")
    assert detect_format(ann) == "coin"
    assert classes == ["ChangeCarTire", "ReplaceCDDriveWithSSD"]
    assert [(r.path, r.label) for r in records] == [(str(clip), 1), (str(tmp_path / "videos" / "13" / "xyz.mp4"), 0)]
    records, _ = read_annotations(ann, tmp_path / "videos", subset="testing", classes=classes)
    assert [r.label for r in records] == [0]
    (tmp_path / "bad.json").write_text('{"videos": []}')
    with pytest.raises(ValueError, match="bad.json is not a COIN/ActivityNet-style annotation file"):
        read_annotations(tmp_path / "bad.json")


def test_class_names_map_by_the_given_list_and_unknown_ones_are_named(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("path,label\na.mp4,run\nb.mp4,walk\n")
    val = tmp_path / "val.csv"
    val.write_text("path,label\nc.mp4,walk\n")
    _, classes = read_annotations(train)
    records, same = read_annotations(val, classes=classes)
    assert same == ["run", "walk"] and records[0].label == 1  # not 0, its position in val.csv alone
    val.write_text("path,label\nc.mp4,walk\nd.mp4,jump\n")
    with pytest.raises(UnknownClassError, match=r"val.csv:3: unknown class 'jump' \(known classes: run, walk\)"):
        read_annotations(val, classes=classes)
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("a.mp4,0\nb.mp4,7\n")
    with pytest.raises(UnknownClassError, match="numbers.csv:2: class index 7 is out of range for the 2 known"):
        read_annotations(numbers, classes=classes)
    with pytest.raises(ValueError, match="no subsets"):
        read_annotations(numbers, subset="train")
