"""The training loop: one process or many (``torchrun``), resumable to the batch.

``train(cfg)`` builds everything from an :class:`~s4vision.engine.config.ExperimentConfig`,
trains, and leaves in ``cfg.train.output_dir``::

    config.yaml                 the resolved config
    log.csv                     one row per epoch (tensorboard/ too, if installed)
    checkpoints/step_<N>/       the last few training checkpoints (see checkpoint.py)
    model.safetensors, .yaml    the final weights (the EMA weights when train.ema) and metrics

Determinism: with the same seed, config and thread count, two runs produce identical weights,
and a run killed at any point and resumed with ``resume=True`` ends with the same weights as
one that was never interrupted: checkpoints hold the optimiser, schedule, RNG and the position
in the epoch's shuffled order, and data augmentation is seeded per sample (not from the
global RNG), so skipped batches replay exactly.
"""
from __future__ import annotations

import math
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

from ..data.images import SubsetImageDataset, TransformedDataset, create_image_dataset, create_image_transform
from .checkpoint import CheckpointManager, capture_rng_state, load_model_weights, restore_rng_state, save_model_file
from .config import ExperimentConfig, config_to_dict, progressive_schedule, resolution_at_epoch
from .distributed import DistributedContext, all_reduce_sum, barrier, cleanup, init_distributed
from .evaluate import EvalResult, autocast, evaluate, evaluate_resolutions, evaluation_loader
from .factory import check_resolution, create_classifier, is_s4vision_model
from .logger import MetricLogger
from .optim import create_optimizer, create_scheduler
from .sampler import ResumableSampler
from .._io import atomic_write_text
from ..errors import InvalidValueError, TrainingDivergedError

__all__ = ["TrainResult", "Trainer", "train", "seed_everything"]

# Config keys that may change between a run and its resumption without changing its result.
_RESUME_FREE_KEYS = {"train.progress", "train.device", "train.threads", "train.checkpoint_every",
                     "train.keep_checkpoints", "data.num_workers", "data.eval_batch_size", "eval.resolutions"}


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
    """Train as ``cfg`` says; ``resume=True`` continues from the newest checkpoint in
    ``cfg.train.output_dir`` (or starts afresh if there is none). ``progress_position`` is the
    terminal line of the progress bars, for several trainings running side by side."""
    ctx = init_distributed(cfg.train.device)
    try:
        return Trainer(cfg, ctx, progress_position=progress_position).fit(resume=resume)
    finally:
        cleanup(ctx)


class Trainer:
    def __init__(self, cfg: ExperimentConfig, ctx: DistributedContext | None = None,
                 progress_position: int | None = None):
        self.cfg = cfg
        self.progress_position = progress_position
        self.ctx = ctx or DistributedContext()
        self.device = self.ctx.device
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)
        self.output_dir = Path(cfg.train.output_dir)

        self.train_set, self.eval_set = self._datasets()
        self.model = self._model()
        self.schedule = progressive_schedule(cfg)
        for resolution in {res for _, res in self.schedule} | set(cfg.eval.resolutions):
            check_resolution(self.model, resolution, cfg.model.name)
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
        autocast(self.device, cfg.train.amp)  # validates amp against the device
        self.scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None
        self.ema = self._ema()
        self.net = self.model
        if self.ctx.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids)

        # Augmentation is seeded per sample and the loader draws its seeds from a private
        # generator, so the global RNG (dropout, ...) is consumed the same way on resume.
        self.train_data = TransformedDataset(self.train_set, transform=None, seed=cfg.train.seed)
        self.loader = DataLoader(self.train_data, batch_size=cfg.data.batch_size, sampler=self.sampler,
                                 num_workers=cfg.data.num_workers, generator=torch.Generator(),
                                 pin_memory=self.device.type == "cuda")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", cfg.train.keep_checkpoints)
        self.logger: MetricLogger | None = None

    # -- construction ---------------------------------------------------------------------------

    def _datasets(self):
        data = self.cfg.data

        def make(split: str):
            return create_image_dataset(data.dataset, split, root=data.root, download=data.download,
                                        in_chans=self.cfg.model.kwargs.get("in_chans"))

        if data.download and self.ctx.distributed and not self.ctx.is_main:
            barrier(self.ctx)  # let rank 0 download first
        train_set, eval_set = make(data.train_split), make(data.eval_split)
        if data.eval_limit is not None:
            eval_set = SubsetImageDataset(eval_set, data.eval_limit)
        datasets = train_set, eval_set
        if data.download and self.ctx.distributed and self.ctx.is_main:
            barrier(self.ctx)
        return datasets

    def _model_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.cfg.model.kwargs)
        kwargs.setdefault("in_chans", self.train_set.in_chans)
        kwargs.setdefault("num_classes", self.train_set.num_classes)
        if is_s4vision_model(self.arch):
            # s4vision backbones record the resolution they are trained at (the sampling step
            # their continuous kernels are defined against): the final one of the schedule.
            final = progressive_schedule(self.cfg)[-1][1]
            kwargs.setdefault("img_size", (final, final))
        return kwargs

    def _model(self) -> nn.Module:
        mc = self.cfg.model
        model = create_classifier(mc.name, pretrained=mc.pretrained, **self._model_kwargs())
        if mc.checkpoint:
            load_model_weights(model, mc.checkpoint, arch=self.arch)
        return model

    @property
    def arch(self) -> str:
        return self.cfg.model.name.split(".")[0]

    def _ema(self):
        if not self.cfg.train.ema:
            return None
        from timm.utils import ModelEmaV3

        return ModelEmaV3(self.model, decay=self.cfg.train.ema_decay)

    # -- checkpoints ----------------------------------------------------------------------------

    def _metadata(self, resolution: int, epoch: int, step: int) -> dict[str, Any]:
        kwargs = self._model_kwargs()
        return {"arch": self.arch, "in_chans": kwargs.pop("in_chans"), "num_classes": kwargs.pop("num_classes"),
                "model_kwargs": kwargs, "dataset": self.cfg.data.dataset, "train_resolution": resolution,
                "epoch": epoch, "step": step}

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
        checkpoint = self.checkpoints.latest()
        if checkpoint is None:
            return None
        model_state, ema_state, state = CheckpointManager.load(checkpoint)
        if state["world_size"] != self.ctx.world_size:
            raise InvalidValueError(f"checkpoint {checkpoint} was written by {state['world_size']} processes; "
                                    f"resume it with the same number, not {self.ctx.world_size}")
        self._warn_config_changes(state["config"])
        self.model.load_state_dict(model_state)
        if self.ema is not None:
            if ema_state is None:
                raise InvalidValueError(f"checkpoint {checkpoint} has no EMA weights but train.ema=true")
            self.ema.module.load_state_dict(ema_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        totals = state["epoch_totals"] if self.ctx.is_main else torch.zeros_like(state["epoch_totals"])
        if self.ctx.is_main:
            tqdm.write(f"resuming from {checkpoint} (epoch {state['epoch'] + 1}, batch {state['batch']}, "
                       f"step {state['global_step']})")
        return state["epoch"], state["batch"], state["global_step"], totals

    def _warn_config_changes(self, saved: dict[str, Any]) -> None:
        current = _flatten(config_to_dict(self.cfg))
        before = _flatten(saved)
        changed = sorted(k for k in set(current) | set(before)
                         if current.get(k) != before.get(k) and k not in _RESUME_FREE_KEYS)
        if changed and self.ctx.is_main:
            warnings.warn(f"resuming with a config that differs from the checkpoint's in: {', '.join(changed)}",
                          stacklevel=2)

    # -- the loop -------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        restored = self._restore() if resume else None
        if restored is None and self.checkpoints.latest() is not None:
            raise InvalidValueError(f"{self.output_dir} already holds checkpoints of a previous run; pass --resume "
                                    "(resume=True) to continue it, or choose another train.output_dir")
        if resume and restored is None and self.ctx.is_main:
            tqdm.write(f"no checkpoint in {self.checkpoints.directory}; starting from scratch")
        epoch, batch, step, totals = restored or (0, 0, 0, torch.zeros(3, dtype=torch.float64))
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            self.logger = MetricLogger(self.output_dir)
            self.logger.truncate_from(epoch)

        history: list[dict[str, Any]] = []
        resolution = resolution_at_epoch(cfg, epoch)
        while epoch < cfg.train.epochs and step < self.total_steps:
            resolution = resolution_at_epoch(cfg, epoch)
            started = time.perf_counter()
            step, totals = self._train_epoch(epoch, resolution, batch, step, totals)
            row = self._epoch_row(epoch, step, resolution, totals, time.perf_counter() - started)
            history.append(row)
            epoch, batch, totals = epoch + 1, 0, torch.zeros_like(totals)
            self._save_checkpoint(epoch, 0, step, totals, resolution)

        zero_shot = {}
        if cfg.eval.resolutions:
            zero_shot = evaluate_resolutions(self._eval_model(), self.eval_set, cfg.eval.resolutions,
                                             device=self.device, batch_size=cfg.data.eval_batch_size,
                                             interpolation=cfg.data.interpolation, amp=cfg.train.amp, ctx=self.ctx,
                                             progress=self._show_progress, position=self.progress_position)
        model_file = self.output_dir / "model.safetensors"
        if self.ctx.is_main:
            self._export(model_file, resolution, epoch, step, history, zero_shot)
            self.logger.close()
        barrier(self.ctx)
        return TrainResult(self.output_dir, model_file, resolution, step, history, zero_shot)

    @property
    def _show_progress(self) -> bool:
        return self.cfg.train.progress and self.ctx.is_main

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _train_epoch(self, epoch: int, resolution: int, start_batch: int, step: int,
                     totals: torch.Tensor) -> tuple[int, torch.Tensor]:
        cfg = self.cfg
        aug = cfg.data.augment
        self.train_data.transform = create_image_transform(
            resolution, training=True, mean=self.train_set.mean, std=self.train_set.std,
            random_resized_crop=aug.random_resized_crop, scale=aug.scale, ratio=aug.ratio, hflip=aug.hflip,
            antialias_prob=aug.antialias_prob, blur_prob=aug.blur_prob, blur_sigma=aug.blur_sigma,
            interpolation=cfg.data.interpolation)
        self.train_data.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start=start_batch * cfg.data.batch_size)
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=start_batch,
                   desc=f"{self.arch} epoch {epoch + 1}/{cfg.train.epochs} @{resolution}px",
                   disable=not self._show_progress, dynamic_ncols=True, leave=False, position=self.progress_position)
        every = cfg.train.checkpoint_every
        for batch, (images, targets) in enumerate(self.loader, start=start_batch):
            loss, correct = self._train_step(images, targets, step)
            step += 1
            totals += torch.tensor([loss * targets.numel(), correct, targets.numel()], dtype=totals.dtype)
            bar.update()
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", acc=f"{100 * totals[1] / totals[2]:.1f}")
            if step >= self.total_steps:
                break
            if every and step % every == 0 and batch + 1 < self.steps_per_epoch:
                self._save_checkpoint(epoch, batch + 1, step, totals, resolution)
        bar.close()
        return step, totals

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> tuple[float, int]:
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.train.amp):
            logits = self.net(images)
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
        return value, int((logits.argmax(dim=1) == targets).sum())

    def _epoch_row(self, epoch: int, step: int, resolution: int, totals: torch.Tensor, seconds: float) -> dict:
        totals = all_reduce_sum(totals.clone(), self.ctx)
        row = {"epoch": epoch, "step": step, "resolution": resolution,
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": (totals[0] / totals[2]).item(), "train_top1": (100 * totals[1] / totals[2]).item(),
               "seconds": seconds}
        every = self.cfg.train.eval_every
        last = epoch + 1 == self.cfg.train.epochs or step >= self.total_steps
        if every and ((epoch + 1) % every == 0 or last):
            loader = evaluation_loader(self.eval_set, resolution, batch_size=self.cfg.data.eval_batch_size,
                                       interpolation=self.cfg.data.interpolation, ctx=self.ctx)
            result = evaluate(self._eval_model(), loader, self.device, amp=self.cfg.train.amp, ctx=self.ctx)
            row.update(eval_loss=result.loss, eval_top1=result.top1)
        if self.ctx.is_main:
            self.logger.log(row)
            held_out = f", held-out {row['eval_top1']:.2f}%" if "eval_top1" in row else ""
            tqdm.write(f"{self.arch} epoch {epoch + 1}/{self.cfg.train.epochs} @{resolution}px: loss {row['train_loss']:.4f}, "
                       f"train {row['train_top1']:.2f}%{held_out} ({seconds:.1f}s)")
        return row

    def _export(self, path: Path, resolution: int, epoch: int, step: int, history: list[dict],
                zero_shot: dict[int, EvalResult]) -> None:
        sidecar = {
            "arch": self.arch, "train_resolution": resolution, "epochs": epoch, "steps": step,
            "ema": self.ema is not None,
            "held_out_top1": history[-1].get("eval_top1") if history else None,
            "zero_shot_top1": {int(res): round(r.top1, 2) for res, r in zero_shot.items()},
            "config": config_to_dict(self.cfg),
        }
        save_model_file(path, self._eval_model().state_dict(), self._metadata(resolution, epoch, step), sidecar)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "kwargs":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
