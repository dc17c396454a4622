"""tools/bench_scan.py runs end to end at a tiny size and records what it printed."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_scan_smoke(tmp_path):
    out, png = tmp_path / "scan.json", tmp_path / "scan.png"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_scan.py"), "--rows", "8", "--lengths", "64", "1100",
           "--dtypes", "float32", "complex64", "--repeats", "1", "--no-compile", "--out", str(out), "--plot", str(png)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads(out.read_text())["results"]
    kinds = {(r["a_kind"], r["dtype"], r["length"]) for r in records}
    assert kinds == {(k, d, L) for k in ("full", "const") for d in ("float32", "complex64") for L in (64, 1100)}
    torch_rows = [r for r in records if r["method"] == "torch"]
    assert all(r["seconds"] > 0 and r["speedup_vs_loop"] > 0 for r in torch_rows)
    assert png.stat().st_size > 10_000
