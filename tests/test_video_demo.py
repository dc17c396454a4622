"""``s4vision video demo`` end to end at a tiny scale: every step runs and the outputs are written."""
import json

from s4vision.cli import main
from s4vision.video_demo import DEMO_HEADS, DEMO_RATES


def test_video_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    status = main(["video", "demo", "--out-dir", str(out), "--train-clips", "6", "--val-clips", "3",
                   "--num-frames", "32", "--epochs", "1", "--encoder-images", "40", "--encoder-epochs", "1",
                   "--threads", "1"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy"]) == set(DEMO_HEADS)
    for accuracy in results["accuracy"].values():
        assert set(accuracy) == {f"{r:g}" for r in DEMO_RATES}
        assert all(0 <= a <= 100 and (3 * a / 100).is_integer() for a in accuracy.values())  # 3 clips each
    assert (out / "frame_rate.png").stat().st_size > 0
    # the held-out clips at 16 fps have twice the frames of those at 8 fps, over the same seconds
    index_8 = json.loads((out / "features" / "8" / "index.json").read_text())["videos"][0]
    index_16 = json.loads((out / "features" / "16" / "index.json").read_text())["videos"][0]
    assert index_16["shape"][0] == 2 * index_8["shape"][0] and index_16["fps"] == 2 * index_8["fps"]
    printed = capsys.readouterr().out
    assert "4 fps" in printed and "16 fps" in printed and "vis4mer" in printed
