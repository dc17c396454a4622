"""One-command GPU check (``make gpu-check``): everything that only a GPU can tell, in one run.

On a machine with a CUDA GPU, in under 8 minutes (a deadline every stage respects), it runs:

1. ``tests``: the test suite's device-aware subset (``pytest -m device``, the device taken from
   ``S4VISION_TEST_DEVICE=cuda``), then the Triton scan tests compiled for the GPU (not the
   interpreter) against the loop.
2. ``bf16_training``: a bf16-autocast training step of every model family (2D and 3D
   S4ND-ConvNeXt, isotropic S4ND, CCNN, ViS4mer): finite loss and gradients, an optimiser step.
3. ``compile_inductor``: ``torch.compile`` (inductor) of ``s4nd_convnext_atto`` against eager,
   inference and one training step.
4. ``torchrun_nccl``: a one-process ``torchrun`` training run of the engine (NCCL backend).
5. ``bench_scan``: ``tools/bench_scan.py``, GB/s as a fraction of the device's memory bandwidth.
6. ``bench_models``: ``tools/bench_models.py``, S4ND-ConvNeXt next to timm's ConvNeXt on the GPU.
7. ``bench_nd``: ``tools/bench_nd.py``, the N-d layers next to the depthwise 7x7 convolution.

It writes one JSON (every stage's status, time and figures) and one markdown table
(``--out-dir``, default ``gpu_check/``), prints the table, and exits non-zero if a stage failed.
Without a GPU it runs a dry run instead (``--dry-run`` forces one): the same stages on the CPU at
toy sizes, with the eager backend instead of inductor and gloo instead of NCCL, which checks the
plumbing in about a minute (``tests/test_gpu_check.py`` runs it as part of ``make test``).

    python tools/gpu_check.py                 # on a GPU machine
    python tools/gpu_check.py --dry-run --out-dir /tmp/gpu_check

It runs the checkout it belongs to, installed or not: on a GPU image whose Python already holds
a CUDA build of torch (and no package registry), ``make gpu-check PY=python3``. Before the stages
it checks that the packages each stage imports are there; a stage whose packages are missing is
reported as failed with the packages to install, and the others still run. For a machine without
a registry, ``make gpu-wheelhouse`` (where a registry is at hand) downloads the packages a CUDA
image usually lacks (:data:`WHEELHOUSE_PACKAGES`) into ``gpu_wheelhouse/``; carried over, ``make
gpu-check PY=python3 WHEELHOUSE=gpu_wheelhouse`` (``--wheelhouse``) installs them, without their
dependencies and without the network, into ``<out-dir>/site`` for this run only.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's s4vision, whether or not it is installed
DEADLINE_S = 480.0
# Per-stage limits on a GPU (the deadline caps them further); a dry run uses DRY_LIMIT_S.
STAGE_LIMIT_S = {"tests": 150, "bf16_training": 60, "compile_inductor": 180, "torchrun_nccl": 90,
                 "bench_scan": 60, "bench_models": 120, "bench_nd": 90}
DRY_LIMIT_S = 120
# Modules every stage imports (s4vision's own needs at import), then those of single stages.
CORE_MODULES = ("torch", "torchvision", "timm", "numpy", "safetensors", "yaml", "tqdm")
STAGE_MODULES = {"tests": ("pytest",), "torchrun_nccl": ("omegaconf", "sklearn"), "bench_scan": ("matplotlib",)}
PIP_NAMES = {"yaml": "pyyaml", "sklearn": "scikit-learn"}
# What `make gpu-wheelhouse` downloads: what the stages import beyond a CUDA image's usual packages
# (the torchrun stage's engine reads configs with omegaconf; from 2.4 it vendors its antlr4 runtime,
# so it is one pure-Python wheel).
WHEELHOUSE_PACKAGES = ("omegaconf>=2.4",)
COMPILE_FROM = (2, 11)  # the oldest torch whose torch.compile is tested on these models (README)


class Check:
    """Shared state of one run: the device, the deadline and where outputs go."""

    def __init__(self, dry_run: bool, out_dir: Path, deadline_s: float) -> None:
        self.dry_run = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.out_dir = out_dir
        self.start = time.monotonic()
        self.deadline_s = deadline_s

    def remaining(self) -> float:
        return self.deadline_s - (time.monotonic() - self.start)

    def limit(self, stage: str) -> float:
        return max(1.0, min(DRY_LIMIT_S if self.dry_run else STAGE_LIMIT_S[stage], self.remaining()))

    def run(self, cmd: List[str], stage: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run a command under the stage's time limit; raises with the output's tail on failure."""
        path = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        full_env.pop("TRITON_INTERPRET", None)  # compiled Triton kernels, never the interpreter
        full_env.update(env or {})
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=self.limit(stage))
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        return proc


# -- preflight ----------------------------------------------------------------------------------


def missing_modules(names) -> List[str]:
    """The modules of ``names`` that cannot be imported here."""
    return [n for n in names if importlib.util.find_spec(n) is None]


def missing_message(missing: List[str]) -> str:
    pip = " ".join(PIP_NAMES.get(n, n) for n in missing)
    return (f"missing Python packages: {', '.join(missing)} (pip install {pip}; on a machine without a "
            f"registry, bring their wheels in a folder DIR and pass --wheelhouse DIR, e.g. the gpu_wheelhouse/ "
            f"that make gpu-wheelhouse fills)")


def install_wheelhouse(wheelhouse: Path, target: Path) -> List[str]:
    """Install every wheel and source archive in ``wheelhouse`` into ``target`` with pip, offline
    and without dependencies, and put ``target`` first on this process's and its subprocesses'
    import path; returns the files' names. Raises ``ValueError`` naming the problem (no such folder, nothing in it, pip's
    own error)."""
    if not wheelhouse.is_dir():
        raise ValueError(f"wheelhouse {wheelhouse} is not a directory (make gpu-wheelhouse creates gpu_wheelhouse/)")
    files = sorted(f for f in wheelhouse.iterdir() if f.name.endswith((".whl", ".tar.gz", ".zip")))
    if not files:
        raise ValueError(f"wheelhouse {wheelhouse} holds no .whl, .tar.gz or .zip files")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation",
           "--upgrade", "--target", str(target), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"installing the wheelhouse {wheelhouse} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    return [f.name for f in files]


def download_wheelhouse(wheelhouse: Path) -> int:
    """Download :data:`WHEELHOUSE_PACKAGES` (no dependencies) into ``wheelhouse``; pip's exit code."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(wheelhouse), *WHEELHOUSE_PACKAGES]
    return subprocess.run(cmd).returncode


def versions() -> Dict[str, Optional[str]]:
    """Versions of the packages whose behaviour the check depends on (``None``: not installed)."""
    out = {}
    for name in ("torch", "triton", "timm", "torchvision", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# -- stages -------------------------------------------------------------------------------------


def stage_tests(check: Check) -> dict:
    env = {"S4VISION_TEST_DEVICE": check.device, "S4VISION_TEST_THREADS": "4"}
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device",
            "tests/ops", "tests/kernels", "tests/layers"]
    proc = check.run(base, "tests", env)
    out = {"device_subset": proc.stdout.strip().splitlines()[-1]}
    if check.dry_run:
        out["triton"] = "skipped: no GPU (the interpreter is exercised by the normal suite)"
        return out
    proc = check.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/test_scan.py",
                      "-k", "triton and not interpreter"], "tests", env)
    out["triton"] = proc.stdout.strip().splitlines()[-1]
    return out


def _families(device: str, dry_run: bool) -> Dict[str, Callable[[], tuple]]:
    """A small member of every model family and a batch for it: ``name -> () -> (model, x, target)``."""
    import timm
    import s4vision  # noqa: F401
    from s4vision.models import ViS4mer

    img = 32 if dry_run else 64

    def image(name: str, size: int, chans: int = 3, **kwargs):
        def build():
            model = timm.create_model(name, **kwargs)
            x = torch.randn(2, chans, size, size)
            return model, x, torch.randint(0, model.num_classes, (2,))
        return build

    def clip():
        model = timm.create_model("s4nd_convnext3d_atto", num_classes=10)
        return model, torch.randn(2, 3, 4, img, img), torch.randint(0, 10, (2,))

    def vis4mer():
        model = ViS4mer(32, 5, embed_dim=32, depth=2, d_state=16)
        return model, torch.randn(2, 16, 32), torch.randint(0, 5, (2,))

    return {
        "s4nd_convnext_atto": image("s4nd_convnext_atto", img, num_classes=10),
        "s4nd_convnext3d_atto": clip,
        "s4nd_vit_tiny_patch16": image("s4nd_vit_tiny_patch16", img, num_classes=10),
        "s4nd_iso_micro": image("s4nd_iso_micro", 14, chans=1),
        "ccnn_micro": image("ccnn_micro", 14, chans=1),
        "vis4mer": vis4mer,
    }


def stage_bf16_training(check: Check) -> dict:
    results = {}
    for name, build in _families(check.device, check.dry_run).items():
        model, x, target = build()
        model = model.to(check.device).train()
        x, target = x.to(check.device), target.to(check.device)
        optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
        start = time.perf_counter()
        with torch.autocast(device_type=torch.device(check.device).type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), target)
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if not torch.isfinite(loss) or bad:
            raise RuntimeError(f"{name}: loss {float(loss)}, non-finite gradients in {bad[:5]}")
        optimiser.step()
        _sync(check.device)
        results[name] = dict(loss=round(float(loss), 4), seconds=round(time.perf_counter() - start, 3))
    return results


def stage_compile_inductor(check: Check) -> dict:
    import timm
    import s4vision  # noqa: F401

    if torch.__version__ < COMPILE_FROM:
        raise RuntimeError(f"torch.compile of the models is supported from torch {'.'.join(map(str, COMPILE_FROM))}; "
                           f"this is torch {torch.__version__}")
    backend = "eager" if check.dry_run else "inductor"
    size, batch = (32, 2) if check.dry_run else (224, 8)
    torch.manual_seed(0)
    small = dict(depths=(1, 1, 1, 1)) if check.dry_run else {}  # a shorter graph to trace on the CPU
    model = timm.create_model("s4nd_convnext_atto", **small).to(check.device).eval()
    x = torch.randn(batch, 3, size, size, device=check.device)
    start = time.perf_counter()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        expected, got = model(x), compiled(x)
    _sync(check.device)
    compile_s = time.perf_counter() - start
    error = float((got - expected).norm() / expected.norm())
    if error > 1e-3:
        raise RuntimeError(f"compiled model differs from eager: relative error {error:.2e}")
    model.train()
    target = torch.randint(0, model.num_classes, (batch,), device=check.device)
    torch.nn.functional.cross_entropy(compiled(x), target).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads):
        raise RuntimeError("compiled training step gave missing or non-finite gradients")
    return dict(backend=backend, input=[batch, 3, size, size], relative_error=error, compile_and_first_call_s=round(compile_s, 1))


def stage_torchrun_nccl(check: Check) -> dict:
    backend = "gloo" if check.dry_run else "nccl"
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["model.name=s4nd_iso_micro", "data.dataset=digits", "data.eval_split=test", "data.resolution=8",
                     "data.batch_size=32",
                     "train.epochs=1", "train.max_steps=2", f"train.device={check.device}", "train.progress=false",
                     f"train.output_dir={tmp}/run", "train.threads=1", "eval.resolutions=[8]"]
        if not check.dry_run:
            overrides.append("train.amp=bf16")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "s4vision.cli", "train", "mnist5k_s4nd_iso_micro", *overrides]
        check.run(cmd, "torchrun_nccl")
        exported = (Path(tmp) / "run" / "model.safetensors").is_file()
    if not exported:
        raise RuntimeError("the torchrun training run did not export model.safetensors")
    return dict(backend=backend, processes=1, steps=2)


def _bench(check: Check, stage: str, script: str, args: List[str]) -> dict:
    out = check.out_dir / f"{stage}.json"
    check.run([sys.executable, str(TOOLS / script), *args, "--out", str(out)], stage)
    return json.loads(out.read_text())


def stage_bench_scan(check: Check) -> dict:
    args = ["--device", check.device, "--no-compile", "--plot", str(check.out_dir / "bench_scan.png")]
    args += ["--rows", "8", "--lengths", "64", "--dtypes", "float32", "--repeats", "1"] if check.dry_run else \
        ["--lengths", "4096", "65536", "--repeats", "5"]
    report = _bench(check, "bench_scan", "bench_scan.py", args)
    rows = [r for r in report["results"] if r.get("method") in ("torch", "triton")]
    best = max((r.get("peak_fraction") or 0.0 for r in rows), default=0.0)
    return dict(peak_gbs=report.get("peak_gbs"), best_peak_fraction=best,
                rows=[{k: r.get(k) for k in ("method", "a_kind", "dtype", "length", "gb_per_s", "peak_fraction")} for r in rows])


def stage_bench_models(check: Check) -> dict:
    if check.dry_run:
        args = ["--models", "s4nd_convnext_atto,convnext_atto", "--resolutions", "32", "--batch", "1",
                "--train-batch", "1", "--rounds", "1", "--clocks", "wall@1"]
    else:
        args = ["--models", "s4nd_convnext_atto,convnext_atto,s4nd_convnext_tiny,convnext_tiny", "--resolutions", "224",
                "--batch", "32", "--train-batch", "32", "--rounds", "5", "--clocks", f"wall@{os.cpu_count() or 1}",
                "--device", "cuda", "--amp", "bf16"]
    report = _bench(check, "bench_models", "bench_models.py", args)
    return dict(table=report["table"], results=report["results"])


def stage_bench_nd(check: Check) -> dict:
    if check.dry_run:
        args = ["--quick", "--clocks", "wall@1", "--kernels", "s4d", "--paths", "--nets", "magnet", "--global-repeats", "0",
                "--rounds", "1"]
    else:
        args = ["--device", "cuda", "--clocks", f"wall@{os.cpu_count() or 1}", "--rounds", "7", "--global-repeats", "0"]
    report = _bench(check, "bench_nd", "bench_nd.py", args)
    return dict(table=report["table"], results=report["results"])


STAGES = [
    ("tests", stage_tests), ("bf16_training", stage_bf16_training), ("compile_inductor", stage_compile_inductor),
    ("torchrun_nccl", stage_torchrun_nccl), ("bench_scan", stage_bench_scan), ("bench_models", stage_bench_models),
    ("bench_nd", stage_bench_nd),
]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- report -------------------------------------------------------------------------------------


def _summary(name: str, result: dict) -> str:
    """One line of the key figures of a stage for the markdown table."""
    if name == "tests":
        return f"device subset: {result['device_subset']}; Triton: {result['triton']}"
    if name == "bf16_training":
        return ", ".join(f"{k} loss {v['loss']}" for k, v in result.items())
    if name == "compile_inductor":
        return f"{result['backend']}, rel. error {result['relative_error']:.1e}, compile + first call {result['compile_and_first_call_s']} s"
    if name == "torchrun_nccl":
        return f"{result['backend']}, {result['processes']} process, {result['steps']} steps"
    if name == "bench_scan":
        fraction = result["best_peak_fraction"]
        return f"best {100 * fraction:.0f}% of {result['peak_gbs']} GB/s" if result["peak_gbs"] else "no peak bandwidth (CPU)"
    if name == "bench_models":
        ratios = [f"{r['model']} {r['infer_ratio']:.2f}x / {r['train_ratio']:.2f}x"
                  for r in result["results"] if r.get("infer_ratio") and r.get("train_ratio")]
        return "infer / train vs timm: " + ", ".join(ratios)
    if name == "bench_nd":
        rows = [f"{'x'.join(map(str, r['shape']))} {r['method']} {r['ratio_to_dwconv7x7']:.2f}x"
                for r in result["results"] if r["method"].startswith(("s4nd_", "flexconv_")) and "[" not in r["method"]]
        return "vs dwconv7x7: " + ", ".join(rows)
    return ""


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({'dry run on CPU' if report['dry_run'] else report['machine']['gpu']})", "",
             f"torch {report['machine']['torch']} (CUDA {report['machine']['cuda']}), "
             f"triton {report['machine']['packages']['triton']}, timm {report['machine']['packages']['timm']}, "
             f"Python {report['machine']['python']}, {report['machine']['platform']}, "
             f"total {report['seconds']:.0f} s (deadline {report['deadline_s']:.0f} s)", "",
             "| stage | status | seconds | figures |", "|---|---|---|---|"]
    for s in report["stages"]:
        figures = _summary(s["name"], s["result"]) if s["status"] == "passed" else s.get("error", "").splitlines()[0][:200]
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {figures.replace('|', '/')} |")
    for s in report["stages"]:
        if s["status"] == "passed" and "table" in s["result"]:
            lines += ["", f"## {s['name']}", "", "```", s["result"]["table"], "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="check the plumbing on the CPU (default without CUDA)")
    p.add_argument("--out-dir", default="gpu_check", help="where gpu_check.json, gpu_check.md and the benchmarks go")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for the whole check")
    p.add_argument("--stages", nargs="+", default=[n for n, _ in STAGES], choices=[n for n, _ in STAGES])
    p.add_argument("--wheelhouse", type=Path, default=None,
                   help="a folder of wheels / source archives to install offline into <out-dir>/site first")
    p.add_argument("--download-wheelhouse", type=Path, default=None, metavar="DIR",
                   help="only download the packages --wheelhouse will need into DIR (needs a registry), then exit")
    args = p.parse_args(argv)
    if args.download_wheelhouse is not None:
        return download_wheelhouse(args.download_wheelhouse)
    out_dir = Path(args.out_dir).resolve()
    installed = None
    if args.wheelhouse is not None:
        try:
            installed = install_wheelhouse(args.wheelhouse.resolve(), out_dir / "site")
        except ValueError as exc:
            print(f"gpu_check: {exc}", file=sys.stderr)
            return 2
    core_missing = missing_modules(CORE_MODULES)
    if core_missing:
        print(f"gpu_check: {missing_message(core_missing)}", file=sys.stderr)
        return 2
    dry_run = args.dry_run or not torch.cuda.is_available()
    if dry_run and not args.dry_run:
        print("no CUDA device: dry run on the CPU (plumbing only, no GPU figures)")
    out_dir.mkdir(parents=True, exist_ok=True)
    check = Check(dry_run, out_dir, args.deadline)
    torch.manual_seed(0)
    stages = []
    for name, fn in STAGES:
        if name not in args.stages:
            continue
        entry = dict(name=name, status="passed", seconds=0.0, result={})
        start = time.monotonic()
        missing = missing_modules(STAGE_MODULES.get(name, ()))
        if check.remaining() <= 1:
            entry.update(status="skipped", error="deadline reached")
        elif missing:
            entry.update(status="failed", error=missing_message(missing))
        else:
            try:
                entry["result"] = fn(check)
            except subprocess.TimeoutExpired:
                entry.update(status="timeout", error=f"over its limit of {check.limit(name):.0f} s")
            except Exception as exc:  # a failed stage is reported; the others still run
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}")
        entry["seconds"] = time.monotonic() - start
        print(f"[gpu_check] {name}: {entry['status']} ({entry['seconds']:.1f} s)", flush=True)
        stages.append(entry)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report = dict(
        dry_run=dry_run, device=check.device, deadline_s=args.deadline, seconds=time.monotonic() - check.start,
        machine=dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(), gpu=gpu,
                     torch=torch.__version__, cuda=torch.version.cuda, packages=versions(), wheelhouse=installed),
        stages=stages,
    )
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out_dir / "gpu_check.md").write_text(text)
    print(text)
    print(f"wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}")
    return 0 if all(s["status"] == "passed" for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
