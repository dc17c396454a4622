"""tools/bench_flexconv_crop.py runs end to end at a tiny size; its rows follow the mask's extent."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_flexconv_crop_smoke(tmp_path):
    out = tmp_path / "crop.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_flexconv_crop.py"), "--shape", "1,2,12,12",
           "--sigmas", "0.01,0.1,0.5", "--rounds", "1", "--clocks", "cpu@1", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert list(rows) == ["dwconv7x7", "sigma=0.01", "sigma=0.1", "sigma=0.5"]
    widths = [rows[n]["half_width"] for n in ("sigma=0.01", "sigma=0.1", "sigma=0.5")]
    assert widths[0] == 0 and widths == sorted(widths) and widths[-1] == 11  # the widest mask keeps every tap
    assert rows["sigma=0.01"]["infer_path"] == "direct" and rows["sigma=0.5"]["train_path"].startswith("FFT")
    assert all(r["infer_ms"] > 0 and r["train_ms"] > 0 and r["train_vs_7x7"] > 0 for r in rows.values())
