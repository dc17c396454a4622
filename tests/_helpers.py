"""Helpers shared by the tests; ``tests/conftest.py`` imports this module, so every test sees it.

pytest puts ``tests/`` (the directory of the root ``conftest.py``) on ``sys.path``, so test
modules import it as ``import _helpers``. A test that starts Python in a subprocess passes
:func:`subprocess_env` as its environment, which puts ``tests/`` on ``PYTHONPATH`` there.

``s4v_test_tiny`` is a tiny timm-registered CNN for engine tests: fast on CPU, with dropout
(it consumes the RNG) and a declared minimum input size of ``MIN_SIZE`` pixels.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
from timm.models import register_model
from torch import nn


def major_minor(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"2.11.0+cu130"`` or ``"2.5.0.dev0"``."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


TORCH_VERSION = major_minor(torch.__version__)
# torch.compile of these layers and models is tested from torch 2.11 (README, "Installation"):
# torch 2.4's dynamo cannot trace int.bit_length and its inductor fails on the S4 layer.
needs_compile = pytest.mark.skipif(TORCH_VERSION < (2, 11), reason="torch.compile is supported from torch 2.11")

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
TINY = "s4v_test_tiny"
MIN_SIZE = 6


def subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with ``tests/`` first on ``PYTHONPATH`` (so a child
    process can ``import _helpers``)."""
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


class TinyNet(nn.Module):
    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 16, drop_rate: float = 0.1):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, width, 3, padding=1)
        self.norm = nn.GroupNorm(4, width)
        self.body = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(width, num_classes)
        self.pretrained_cfg = {"architecture": TINY, "input_size": (in_chans, 8, 8),
                               "min_input_size": (in_chans, MIN_SIZE, MIN_SIZE)}

    def no_weight_decay(self) -> set[str]:
        return {"head.weight"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.norm(self.stem(x)))
        x = nn.functional.gelu(self.body(x)).mean(dim=(2, 3))
        return self.head(self.drop(x))


@register_model
def s4v_test_tiny(pretrained: bool = False, **kwargs) -> TinyNet:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if pretrained:
        raise ValueError("s4v_test_tiny has no pretrained weights")
    return TinyNet(**kwargs)


def small_model(name: str) -> tuple[dict, tuple[int, ...]]:
    """``(kwargs, input shape without batch)`` that build registered s4vision model ``name``
    small enough to run in a test (same code paths: fewer and narrower blocks, small inputs).
    A model family not listed here raises, so a new family gets added, not skipped."""
    families = [
        ("ccnn_", dict(depth=1, hidden=8, kernel_hidden=8, img_size=8, in_chans=3), (3, 8, 8)),
        ("s4nd_convnext3d_", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), img_size=32, num_frames=2,
                                  num_classes=5), (3, 2, 32, 32)),
        ("s4nd_convnext_", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), img_size=32, num_classes=5), (3, 32, 32)),
        ("s4nd_vit_", dict(depth=1, embed_dim=16, img_size=32, num_classes=5), (3, 32, 32)),
        ("s4nd_iso_micro", dict(depth=1, embed_dim=16), (1, 14, 14)),
        ("conv2d_iso_micro", dict(depth=1, embed_dim=16), (1, 14, 14)),
    ]
    for prefix, kwargs, shape in families:
        if name.startswith(prefix):
            return dict(kwargs), shape
    raise KeyError(f"no small configuration for model {name!r}: add its family to _helpers.small_model")


def assert_same_weights(a, b) -> None:
    """Two state dicts, or ``.safetensors`` files, hold the same tensors bit for bit."""
    from safetensors.torch import load_file

    a, b = (load_file(str(x)) if isinstance(x, (str, os.PathLike)) else x for x in (a, b))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- the video engine tests' tiny benchmark (tests/engine/conftest.py writes it) --------------------

VIDEO_FPS, VIDEO_FRAMES, VIDEO_SIZE = 8, 32, 32  # 4 s clips of 32 x 32 frames, one digit per second


def route_config(route: int, bench, output_dir, **extra) -> dict:
    """The config of a route on the tiny benchmark (two short epochs)."""
    common = {"train": {"epochs": 2, "progress": False, "threads": 1, "output_dir": str(output_dir),
                        "checkpoint_every": 0},
              "optim": {"lr": 3e-3, "warmup_epochs": 0.5}}
    if route == 1:  # ViS4mer on cached features, causal (streams)
        cfg = {"task": "video_features",
               "model": {"name": "vis4mer", "kwargs": {"embed_dim": 16, "depth": 2, "d_state": 8,
                                                       "bidirectional": False}},
               "video": {"train": str(bench / "features" / "train"), "eval": str(bench / "features" / "val"),
                         "num_frames": None},
               "data": {"batch_size": 4, "eval_batch_size": 4}}
    elif route == 2:  # frame encoder + ViS4mer on decoded clips, TSN segments, 2 clips per video at eval
        cfg = {"task": "video_clips",
               "model": {"name": "vis4mer", "kwargs": {"embed_dim": 16, "depth": 2, "d_state": 8},
                         "encoder": "test_convnext", "freeze_encoder": False},
               "video": {"train": str(bench / "train.csv"), "eval": str(bench / "val.csv"), "num_frames": 8,
                         "sampler": "segments", "eval_clips": 2},
               "data": {"batch_size": 4, "eval_batch_size": 4, "resolution": VIDEO_SIZE}}
    else:  # a 3D S4ND-ConvNeXt on short windows at 4 fps, sliding windows at eval
        cfg = {"task": "video_clips",
               "model": {"name": "s4nd_convnext3d_atto",
                         "kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}},
               "video": {"train": str(bench / "train.csv"), "eval": str(bench / "val.csv"), "num_frames": 4,
                         "sampler": "window", "fps": 4.0, "eval_windows": "sliding"},
               "data": {"batch_size": 4, "eval_batch_size": 4, "resolution": VIDEO_SIZE}}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    return {**common, **cfg, "train": {**common["train"], **cfg.get("train", {})}}


def write_config(path, cfg: dict):
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


# A training run under torchrun that also saves each rank's final weights (rank<N>.safetensors):
# python -m torch.distributed.run ... DDP_TRAIN_SCRIPT OUT [--config FILE] key=value ...
DDP_TRAIN_SCRIPT = textwrap.dedent("""
    import sys

    import _helpers  # the tiny test model; tests/ is on PYTHONPATH
    from safetensors.torch import save_file
    from s4vision.engine.config import load_config
    from s4vision.engine.distributed import cleanup, init_distributed
    from s4vision.engine.train import Trainer

    out, args = sys.argv[1], sys.argv[2:]
    config = None
    if args[:1] == ["--config"]:
        config, args = args[1], args[2:]
    cfg = load_config(config, [*args, f"train.output_dir={out}/run"])
    ctx = init_distributed(cfg.train.device)
    trainer = Trainer(cfg, ctx)
    trainer.fit()
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, f"{out}/rank{ctx.rank}.safetensors")
    cleanup(ctx)
""")


_CLI = "import sys, _helpers; from s4vision.cli import main; raise SystemExit(main(sys.argv[1:]))"


def cli_command(*args: str) -> list[str]:
    """``s4vision ARGS`` as a child process that can import ``_helpers`` (the tiny test model)."""
    import sys

    return [sys.executable, "-c", _CLI, *args]


def kill_and_resume(train_args: list[str], reference: Path, run: Path, timeout: float = 300) -> dict:
    """Train ``s4vision train TRAIN_ARGS`` uninterrupted into ``reference``; start the same into
    ``run``, SIGKILL it as soon as its first checkpoint appears, check it was killed mid-epoch,
    then resume it with ``--resume`` to the end. Returns the state of the checkpoint resumed from."""
    import signal
    import subprocess
    import time

    from s4vision.engine.checkpoint import CheckpointManager

    env = subprocess_env(OMP_NUM_THREADS="1")
    subprocess.run(cli_command("train", *train_args, f"train.output_dir={reference}"), check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen(cli_command("train", *train_args, f"train.output_dir={run}"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manager = CheckpointManager(run / "checkpoints")
    deadline = time.monotonic() + timeout
    while manager.latest() is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    _, _, state = CheckpointManager.load(manager.latest())
    assert state["batch"] > 0, "expected to resume mid-epoch"
    subprocess.run(cli_command("train", *train_args, f"train.output_dir={run}", "--resume"), check=True, env=env,
                   capture_output=True)
    return state


def torchrun_two_ranks(out: Path, args: list[str], timeout: float = 600) -> tuple[dict, dict, dict]:
    """Train with :data:`DDP_TRAIN_SCRIPT` under ``torchrun`` on two CPU processes into ``out/run``;
    ``(rank 0's weights, rank 1's weights, the exported model.safetensors)``."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    script = out / "ddp_train.py"
    script.write_text(DDP_TRAIN_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(out), *args, "train.device=cpu"],
                          capture_output=True, text=True, timeout=timeout, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tuple(load_file(str(path)) for path in (out / "rank0.safetensors", out / "rank1.safetensors",
                                                   out / "run" / "model.safetensors"))


def load_tool(name: str):
    """The module of ``tools/<name>.py`` (tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same_values_and_grads(out: torch.Tensor, expected: torch.Tensor, inputs, reference_inputs) -> None:
    """``out == expected``, and the gradients of one random cotangent through each, with respect to
    ``inputs`` and ``reference_inputs`` (pairwise), are equal."""
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), list(inputs))
    grads_ref = torch.autograd.grad((expected * g).sum(), list(reference_inputs))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
