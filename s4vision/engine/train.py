"""The training loop: one process or many (``torchrun``), resumable to the batch.

``train(cfg)`` builds everything from an :class:`~s4vision.engine.config.ExperimentConfig`,
trains, and leaves in ``cfg.train.output_dir``. One loop for every kind of model: what the data
and the model are (images, cached frame features, decoded clips) is the config's ``task``
(:mod:`~s4vision.engine.tasks`); the rest is shared::

    config.yaml                 the resolved config
    log.csv                     one row per epoch (tensorboard/ too, if installed)
    checkpoints/step_<N>/       the last few training checkpoints (see checkpoint.py)
    model.safetensors, .yaml    the final weights (the EMA weights when train.ema) and metrics

Determinism: with the same seed, config and thread count, two runs produce identical weights,
and a run killed at any point and resumed with ``resume=True`` ends with the same weights as
one that was never interrupted: checkpoints hold the optimiser, schedule, RNG and the position
in the epoch's shuffled order, and data augmentation is seeded per sample (not from the
global RNG), so skipped batches replay exactly.

Reliability (docs/reliability.md): a run holds its output folder with an operating-system lock
(:mod:`~s4vision.engine.runlock`), so a second run into the same folder refuses to start; resuming
verifies checkpoints and falls back past damaged ones; on resume the learning-rate schedule is
the one the *current* config plans, from the step reached (so ``train.epochs`` can be raised to
extend a finished run, with a printed notice).
"""
from __future__ import annotations

import errno
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import (MODEL_FILE, CheckpointManager, capture_rng_state, check_state_fits, restore_rng_state,
                         save_model_file)
from .config import ExperimentConfig, config_from_dict, config_to_dict, validate_config
from .distributed import DistributedContext, all_reduce_sum, barrier, cleanup, init_distributed
from .evaluate import EvalResult, autocast
from .logger import MetricLogger
from .optim import create_optimizer, create_scheduler
from .runlock import RunLock
from .sampler import ResumableSampler
from .tasks import Task, create_task
from .._io import atomic_write_text
from ..errors import InvalidValueError, MissingFileError, S4VisionError, TrainingDivergedError

__all__ = ["TrainResult", "Trainer", "train", "seed_everything", "StorageFullError"]

# Config keys that may change between a run and its resumption without changing its result.
_RESUME_FREE_KEYS = {"train.progress", "train.device", "train.threads", "train.checkpoint_every",
                     "train.keep_checkpoints", "data.num_workers", "data.eval_batch_size", "eval.resolutions"}


class StorageFullError(S4VisionError, OSError):
    """Training stopped because the disk (or quota) is full; the checkpoints already written are intact."""


@dataclass
class TrainResult:
    output_dir: Path
    model_file: Path
    train_resolution: int
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)  # the epochs this call ran
    zero_shot: dict[int, EvalResult] = field(default_factory=dict)  # eval.resolutions after training


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: ExperimentConfig, *, resume: bool = False, progress_position: int | None = None) -> TrainResult:
    """Train as ``cfg`` says; ``resume=True`` continues from the newest intact checkpoint in
    ``cfg.train.output_dir`` (or starts afresh, with a printed notice, if there is none; the
    command line refuses ``--resume`` into a folder that does not exist). ``progress_position``
    is the terminal line of the progress bars, for several trainings running side by side.

    Raises :class:`~s4vision.engine.runlock.RunFolderLockedError` when another process is
    training into the same folder."""
    ctx = init_distributed(cfg.train.device)
    try:
        return Trainer(cfg, ctx, progress_position=progress_position).fit(resume=resume)
    finally:
        cleanup(ctx)


class Trainer:
    def __init__(self, cfg: ExperimentConfig, ctx: DistributedContext | None = None,
                 progress_position: int | None = None):
        validate_config(cfg)
        self.cfg = cfg
        self.progress_position = progress_position
        self.ctx = ctx or DistributedContext()
        self.device = self.ctx.device
        self.output_dir = Path(cfg.train.output_dir)
        self.lock = RunLock(self.output_dir)
        if self.ctx.is_main:  # fail before the slow part: paths, and a folder another run holds
            _check_output_dir(self.output_dir)
            if self.output_dir.is_dir():
                self.lock.acquire().release()
        if cfg.model.checkpoint and not Path(cfg.model.checkpoint).is_file():
            raise MissingFileError(f"model.checkpoint file not found: {cfg.model.checkpoint}")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)

        self.task: Task = create_task(cfg, self.ctx)
        self.train_set, self.eval_set = self._datasets()
        self.model = self.task.build_model()
        self.task.check_model(self.model)
        self.model.to(self.device)

        self.optimizer = create_optimizer(self.model, cfg.optim)
        self.sampler = ResumableSampler(len(self.train_set), shuffle=True, seed=cfg.train.seed,
                                        rank=self.ctx.rank, world_size=self.ctx.world_size)
        self.steps_per_epoch = math.ceil(self.sampler.per_rank / cfg.data.batch_size)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        if cfg.train.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        warmup = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.scheduler = create_scheduler(self.optimizer, self.total_steps, warmup, cfg.optim.min_lr_ratio)
        self._planned_lr = _lr_plan(self.optimizer, self.scheduler)  # what the config plans, kept over a resume
        autocast(self.device, cfg.train.amp)  # validates amp against the device
        self.scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None
        self.ema = self._ema()
        self.net = self.model
        if self.ctx.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids)

        # Augmentation (and random clip positions) are seeded per sample and the loader draws its
        # seeds from a private generator, so the global RNG (dropout, ...) is consumed the same
        # way on resume.
        self.train_data = self.task.train_data()
        self.loader = DataLoader(self.train_data, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, generator=torch.Generator(),
                                 pin_memory=self.device.type == "cuda", collate_fn=self.task.collate_fn)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", cfg.train.keep_checkpoints)
        self.logger: MetricLogger | None = None

    # -- construction ---------------------------------------------------------------------------

    def _datasets(self):
        """``(train, eval)`` datasets, as the task builds them."""
        self.task.build_datasets()
        return self.task.train_set, self.task.eval_set

    @property
    def arch(self) -> str:
        return self.task.arch

    def _ema(self):
        if not self.cfg.train.ema:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(self.model, decay=self.cfg.train.ema_decay)

    # -- checkpoints ----------------------------------------------------------------------------

    def _metadata(self, resolution: int, epoch: int, step: int) -> dict[str, Any]:
        return {**self.task.metadata(resolution), "epoch": epoch, "step": step}

    def _save_checkpoint(self, epoch: int, batch: int, step: int, totals: torch.Tensor, resolution: int) -> None:
        """Checkpoint *before* ``batch`` of ``epoch`` (``batch == 0``: the epoch has not begun)."""
        totals = all_reduce_sum(totals.clone(), self.ctx)  # collective: every rank takes part
        if not self.ctx.is_main:
            return
        state = {
            "epoch": epoch, "batch": batch, "global_step": step, "epoch_totals": totals,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(), "world_size": self.ctx.world_size, "config": config_to_dict(self.cfg),
        }
        self.checkpoints.save(step, self.model.state_dict(), self._metadata(resolution, epoch, step), state,
                              ema_state=self.ema.module.state_dict() if self.ema is not None else None)

    def _restore(self) -> tuple[int, int, int, torch.Tensor] | None:
        found = self.checkpoints.load_newest_intact(move_damaged=self.ctx.is_main)
        if found is None:
            return None
        checkpoint, (model_state, ema_state, state) = found
        if state["world_size"] != self.ctx.world_size:
            raise InvalidValueError(f"checkpoint {checkpoint} was written by {state['world_size']} processes; "
                                    f"resume it with the same number, not {self.ctx.world_size}")
        saved_arch = state["config"].get("model", {}).get("name", "").split(".")[0] or None
        check_state_fits(self.model, model_state, checkpoint / MODEL_FILE, arch=self.arch, saved_arch=saved_arch)
        self._warn_config_changes(state["config"])
        self.model.load_state_dict(model_state)
        if self.ema is not None:
            if ema_state is None:
                raise InvalidValueError(f"checkpoint {checkpoint} has no EMA weights but train.ema=true")
            self.ema.module.load_state_dict(ema_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._replan_schedule(state["global_step"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        totals = state["epoch_totals"] if self.ctx.is_main else torch.zeros_like(state["epoch_totals"])
        if self.ctx.is_main:
            tqdm.write(f"resuming from {checkpoint} (epoch {state['epoch'] + 1}, batch {state['batch']}, "
                       f"step {state['global_step']})")
        return state["epoch"], state["batch"], state["global_step"], totals

    def _replan_schedule(self, step: int) -> None:
        """Make the restored schedule the one the current config plans, from ``step`` on.

        Unchanged settings leave everything as restored (bit-exact resume). Changed ones
        (``train.epochs``, ``train.max_steps``, ``optim.lr``, ``optim.warmup_epochs``,
        ``optim.min_lr_ratio``) re-plan: the learning rate from ``step`` on is what a run
        planned with the current config would use at that step; a notice says so.
        """
        restored = _lr_plan(self.optimizer, self.scheduler)
        if restored == self._planned_lr:
            return
        base_lrs, schedules = self._planned_lr
        before = self.optimizer.param_groups[0]["lr"]
        for group, base, fn, plan in zip(self.optimizer.param_groups, base_lrs, self.scheduler.lr_lambdas, schedules):
            group["initial_lr"] = base
            fn.__dict__.update(plan)
            group["lr"] = base * fn(self.scheduler.last_epoch)
        self.scheduler.base_lrs = list(base_lrs)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.ctx.is_main:
            old_total = restored[1][0].get("total_steps")
            tqdm.write(f"notice: the learning-rate schedule is re-planned for the current config: it ends at step "
                       f"{self.total_steps} (the checkpoint's ended at step {old_total}); at step {step} the "
                       f"learning rate goes from {before:.4g} to {self.optimizer.param_groups[0]['lr']:.4g}")

    def _warn_config_changes(self, saved: dict[str, Any]) -> None:
        current = _flatten(config_to_dict(self.cfg))
        try:  # keys added since the checkpoint was written count as their defaults
            before = _flatten(config_to_dict(config_from_dict(saved)))
        except S4VisionError:
            before = _flatten(saved)
        changed = sorted(k for k in set(current) | set(before)
                         if current.get(k) != before.get(k) and k not in _RESUME_FREE_KEYS)
        if changed and self.ctx.is_main:
            warnings.warn(f"resuming with a config that differs from the checkpoint's in: {', '.join(changed)}",
                          stacklevel=2)

    # -- the loop -------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (from the newest intact checkpoint with ``resume``), holding the output folder's
        lock throughout; a full disk raises :class:`StorageFullError`."""
        try:
            if self.ctx.is_main:
                self.lock.acquire()
            return self._fit(resume)
        except OSError as err:
            full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
            if full and not isinstance(err, S4VisionError):
                raise StorageFullError(err.errno, f"no space left while writing {err.filename or self.output_dir}; "
                                       f"the newest intact checkpoint in {self.checkpoints.directory} is untouched: "
                                       "free some space and rerun with --resume") from err
            raise
        finally:
            self.lock.release()

    def _fit(self, resume: bool) -> TrainResult:
        cfg = self.cfg
        restored = self._restore() if resume else None
        if restored is None and self.checkpoints.latest() is not None:
            raise InvalidValueError(f"{self.output_dir} already holds checkpoints of a previous run; pass --resume "
                                    "(resume=True) to continue it, or choose another train.output_dir")
        if resume and restored is None and self.ctx.is_main:
            tqdm.write(f"notice: no checkpoint in {self.checkpoints.directory}; starting a new run there")
        epoch, batch, step, totals = restored or (0, 0, 0, torch.zeros(3, dtype=torch.float64))
        if restored is not None and (epoch >= cfg.train.epochs or step >= self.total_steps) and self.ctx.is_main:
            tqdm.write(f"notice: the run in {self.output_dir} has already reached epoch {epoch} (step {step}) of "
                       f"train.epochs={cfg.train.epochs}; nothing left to train (raise train.epochs to extend it)")
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._remove_temporaries()
            atomic_write_text(self.output_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            self.logger = MetricLogger(self.output_dir)
            self.logger.truncate_from(epoch)

        history: list[dict[str, Any]] = []
        resolution = self.task.resolution_at_epoch(epoch)
        while epoch < cfg.train.epochs and step < self.total_steps:
            resolution = self.task.resolution_at_epoch(epoch)
            started = time.perf_counter()
            step, totals = self._train_epoch(epoch, resolution, batch, step, totals)
            row = self._epoch_row(epoch, step, resolution, totals, time.perf_counter() - started)
            history.append(row)
            epoch, batch, totals = epoch + 1, 0, torch.zeros_like(totals)
            self._save_checkpoint(epoch, 0, step, totals, resolution)

        zero_shot = self.task.final_evaluation(self._eval_model(), self._show_progress, self.progress_position)
        model_file = self.output_dir / "model.safetensors"
        if self.ctx.is_main:
            self._export(model_file, resolution, epoch, step, history, zero_shot)
            self.logger.close()
        barrier(self.ctx)
        return TrainResult(self.output_dir, model_file, resolution, step, history, zero_shot)

    def _remove_temporaries(self) -> None:
        """Temporary files and checkpoint directories a killed run left (we hold the lock: no
        other process is writing them)."""
        self.checkpoints.remove_temporaries()
        for tmp in self.output_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    @property
    def _show_progress(self) -> bool:
        return self.cfg.train.progress and self.ctx.is_main

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _train_epoch(self, epoch: int, resolution: int, start_batch: int, step: int,
                     totals: torch.Tensor) -> tuple[int, torch.Tensor]:
        cfg = self.cfg
        self.task.start_epoch(epoch, resolution)
        self.sampler.set_epoch(epoch, start=start_batch * cfg.data.batch_size)
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=start_batch,
                   desc=f"{self.arch} epoch {epoch + 1}/{cfg.train.epochs}{self.task.describe(resolution)}",
                   disable=not self._show_progress, dynamic_ncols=True, leave=False, position=self.progress_position)
        every = cfg.train.checkpoint_every
        for batch, data in enumerate(self.loader, start=start_batch):
            loss, correct, count = self._train_step(data, step)
            step += 1
            totals += torch.tensor([loss * count, correct, count], dtype=totals.dtype)
            bar.update()
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", acc=f"{100 * totals[1] / totals[2]:.1f}")
            if step >= self.total_steps:
                break
            if every and step % every == 0 and batch + 1 < self.steps_per_epoch:
                self._save_checkpoint(epoch, batch + 1, step, totals, resolution)
        bar.close()
        return step, totals

    def _train_step(self, batch: Any, step: int) -> tuple[float, int, int]:
        """One optimiser step on ``batch``; ``(loss, correct, count)``."""
        logits, targets = self.task.forward(self.net, batch)
        loss = self.criterion(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.optim.clip_grad:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, step=step + 1)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDivergedError(f"training loss became {value} at step {step + 1}; "
                                        "lower optim.lr or set optim.clip_grad")
        return value, int((logits.argmax(dim=1) == targets).sum()), targets.numel()

    def _epoch_row(self, epoch: int, step: int, resolution: int, totals: torch.Tensor, seconds: float) -> dict:
        totals = all_reduce_sum(totals.clone(), self.ctx)
        row = {"epoch": epoch, "step": step, "resolution": resolution,
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": (totals[0] / totals[2]).item(), "train_top1": (100 * totals[1] / totals[2]).item(),
               "seconds": seconds}
        every = self.cfg.train.eval_every
        last = epoch + 1 == self.cfg.train.epochs or step >= self.total_steps
        if every and ((epoch + 1) % every == 0 or last):
            result = self.task.evaluate(self._eval_model(), resolution, self._show_progress, self.progress_position)
            row.update(eval_loss=result.loss, eval_top1=result.top1)
        if self.ctx.is_main:
            self.logger.log(row)
            held_out = f", held-out {row['eval_top1']:.2f}%" if "eval_top1" in row else ""
            tqdm.write(f"{self.arch} epoch {epoch + 1}/{self.cfg.train.epochs}{self.task.describe(resolution)}: "
                       f"loss {row['train_loss']:.4f}, "
                       f"train {row['train_top1']:.2f}%{held_out} ({seconds:.1f}s)")
        return row

    def _export(self, path: Path, resolution: int, epoch: int, step: int, history: list[dict],
                zero_shot: dict[int, EvalResult]) -> None:
        last_row = history[-1] if history else self.logger.last_row()  # a resume with nothing left to train
        sidecar = {
            "arch": self.arch, "train_resolution": resolution, "epochs": epoch, "steps": step,
            "ema": self.ema is not None,
            "held_out_top1": last_row.get("eval_top1") if last_row else None,
            "zero_shot_top1": {int(res): round(r.top1, 2) for res, r in zero_shot.items()},
            "config": config_to_dict(self.cfg),
        }
        save_model_file(path, self._eval_model().state_dict(), self._metadata(resolution, epoch, step), sidecar)


def _check_output_dir(path: Path) -> None:
    """``train.output_dir`` must be (or be creatable as) a writable folder."""
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise InvalidValueError(f"train.output_dir {path} {what}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidValueError(f"train.output_dir {path}: {existing} is not writable")


def _lr_plan(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> tuple:
    """``(base learning rates, schedule settings)`` per parameter group: what a resume compares."""
    return ([group["initial_lr"] for group in optimizer.param_groups],
            [dict(vars(fn)) for fn in scheduler.lr_lambdas])


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "kwargs":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
