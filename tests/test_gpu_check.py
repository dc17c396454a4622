"""tools/gpu_check.py: without a GPU its dry run exercises every stage's plumbing on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import _helpers

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["tests", "bf16_training", "compile_inductor", "torchrun_nccl", "bench_scan", "bench_models", "bench_nd"]


@pytest.mark.slow
@_helpers.needs_compile  # its compile_inductor stage
def test_dry_run_passes_every_stage_and_writes_json_and_markdown(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env=_helpers.subprocess_env(), cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    assert [s["name"] for s in report["stages"]] == STAGES
    assert all(s["status"] == "passed" for s in report["stages"]), [(s["name"], s.get("error")) for s in report["stages"]]
    by_name = {s["name"]: s["result"] for s in report["stages"]}
    assert set(by_name["bf16_training"]) >= {"s4nd_convnext_atto", "s4nd_convnext3d_atto", "ccnn_micro", "vis4mer"}
    assert by_name["torchrun_nccl"]["backend"] == "gloo"  # nccl on a GPU
    assert by_name["compile_inductor"]["relative_error"] < 1e-3
    assert {r["model"] for r in by_name["bench_models"]["results"]} == {"s4nd_convnext_atto", "convnext_atto"}
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "dry run on CPU" in markdown
    for name in STAGES:
        assert f"| {name} | passed |" in markdown


def _gpu_check():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    return gpu_check


def test_failed_stage_is_reported_and_sets_the_exit_code(tmp_path, monkeypatch):
    gpu_check = _gpu_check()

    def broken(check):
        raise RuntimeError("stage broke")

    monkeypatch.setattr(gpu_check, "STAGES", [("tests", broken)])
    assert gpu_check.main(["--dry-run", "--out-dir", str(tmp_path), "--stages", "tests"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["stages"][0]["status"] == "failed" and "stage broke" in report["stages"][0]["error"]
    assert "| tests | failed |" in (tmp_path / "gpu_check.md").read_text()


def test_a_stage_missing_packages_fails_by_name_and_the_others_run(tmp_path, monkeypatch, capsys):
    """On a GPU image without a registry some packages may be absent: the stage that needs one is
    reported with the package to install and never started; the other stages still run."""
    gpu_check = _gpu_check()
    ran = []
    monkeypatch.setattr(gpu_check, "STAGES", [("tests", lambda check: ran.append("tests") or {}),
                                              ("torchrun_nccl", lambda check: ran.append("torchrun_nccl") or {})])
    monkeypatch.setattr(gpu_check, "STAGE_MODULES", {"tests": ("s4vision_no_such_module", "yaml")})
    monkeypatch.setattr(gpu_check, "_summary", lambda name, result: "")
    assert gpu_check.main(["--dry-run", "--out-dir", str(tmp_path), "--stages", "tests", "torchrun_nccl"]) == 1
    assert ran == ["torchrun_nccl"]
    first, second = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert first["status"] == "failed" and second["status"] == "passed"
    assert "missing Python packages: s4vision_no_such_module" in first["error"] and "yaml" not in first["error"].split("(")[0]


def test_core_packages_missing_stops_before_any_stage(tmp_path, monkeypatch, capsys):
    gpu_check = _gpu_check()
    monkeypatch.setattr(gpu_check, "CORE_MODULES", ("torch", "s4vision_no_such_module"))
    monkeypatch.setattr(gpu_check, "STAGES", [("tests", lambda check: pytest.fail("a stage ran"))])
    assert gpu_check.main(["--dry-run", "--out-dir", str(tmp_path)]) == 2
    assert "missing Python packages: s4vision_no_such_module" in capsys.readouterr().err


def _wheel(folder: Path, name: str, source: str) -> Path:
    """A minimal pure-Python wheel of one module ``name`` with the given source."""
    import zipfile

    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
    return path


def test_wheelhouse_is_installed_offline_for_the_stages_and_their_subprocesses(tmp_path, monkeypatch):
    """``--wheelhouse``: its packages are installed into <out-dir>/site, a stage needing one runs,
    and the stage's subprocesses import it too (as torchrun's do)."""
    gpu_check = _gpu_check()
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() extends both for this process
    monkeypatch.setenv("PYTHONPATH", "")
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    _wheel(wheelhouse, "s4vision_wheelhouse_probe", "VALUE = 42\n")
    seen = {}

    def stage(check):
        code = "import s4vision_wheelhouse_probe as m; print(m.VALUE)"
        seen["subprocess"] = check.run([sys.executable, "-c", code], "tests").stdout.strip()
        return {}

    monkeypatch.setattr(gpu_check, "STAGES", [("tests", stage)])
    monkeypatch.setattr(gpu_check, "STAGE_MODULES", {"tests": ("s4vision_wheelhouse_probe",)})
    monkeypatch.setattr(gpu_check, "_summary", lambda name, result: "")
    out = tmp_path / "out"
    assert gpu_check.main(["--dry-run", "--out-dir", str(out), "--wheelhouse", str(wheelhouse), "--stages", "tests"]) == 0
    assert seen["subprocess"] == "42"
    assert (out / "site" / "s4vision_wheelhouse_probe" / "__init__.py").is_file()
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["machine"]["wheelhouse"] == ["s4vision_wheelhouse_probe-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("make, match", [(lambda p: None, "is not a directory"), (lambda p: p.mkdir(), "holds no .whl")])
def test_bad_wheelhouse_is_a_clear_error(tmp_path, capsys, make, match):
    gpu_check = _gpu_check()
    wheelhouse = tmp_path / "wheels"
    make(wheelhouse)
    assert gpu_check.main(["--dry-run", "--out-dir", str(tmp_path / "out"), "--wheelhouse", str(wheelhouse)]) == 2
    assert match in capsys.readouterr().err
