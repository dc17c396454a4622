"""Evaluation: accuracy on a held-out split, at one or several (zero-shot) resolutions."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import timm
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm.auto import tqdm

from ..data.images import ImageDataset, TransformedDataset, create_image_dataset, create_image_transform
from .checkpoint import MODEL_FILE, load_model_weights, read_model_metadata
from .distributed import DistributedContext, all_reduce_sum, resolve_device
from .factory import check_resolution, create_classifier
from .sampler import ResumableSampler
from ..errors import InvalidValueError, MissingFileError

__all__ = ["EvalResult", "autocast", "evaluate", "evaluate_resolutions", "load_checkpoint_model", "check_classes",
           "evaluate_checkpoint"]


@dataclass(frozen=True)
class EvalResult:
    top1: float  # percent
    loss: float
    count: int


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``amp`` in ``none`` / ``bf16`` / ``fp16``."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise InvalidValueError("train.amp=fp16 needs a CUDA device; use bf16 on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: str = "none",
             ctx: DistributedContext | None = None, progress: bool = False, desc: str = "eval",
             position: int | None = None) -> EvalResult:
    """Top-1 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``.

    Under ``ctx`` (several ranks, each with its shard), the sums are reduced over ranks.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=not progress, position=position):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        totals[0] += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        totals[1] += (logits.argmax(dim=1) == targets).sum().item()
        totals[2] += targets.numel()
    model.train(was_training)
    if ctx is not None:
        all_reduce_sum(totals, ctx)
    count = int(totals[2])
    if count == 0:
        raise InvalidValueError("cannot evaluate on an empty dataset")
    return EvalResult(top1=100.0 * totals[1].item() / count, loss=totals[0].item() / count, count=count)


def evaluation_loader(dataset: ImageDataset, resolution: int, *, batch_size: int = 250, interpolation: str = "bilinear",
                      num_workers: int = 0, ctx: DistributedContext | None = None,
                      resize_to: int | None = None) -> DataLoader:
    """Deterministic loader of ``dataset`` resized to ``resolution`` (this rank's shard under ``ctx``).

    ``resize_to``: the ``resolution`` images are then resized again to ``resize_to`` (test-time
    resizing: a model sees the information of a ``resolution`` image at the size it was trained at).
    """
    transform = create_image_transform(resolution, training=False, mean=dataset.mean, std=dataset.std,
                                       interpolation=interpolation)
    if resize_to is not None:
        # Resizing commutes with the per-channel normalisation (its weights sum to one).
        transform = v2.Compose([transform, create_image_transform(resize_to, mean=(0.0,), std=(1.0,),
                                                                  interpolation=interpolation)])
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    sampler = ResumableSampler(len(dataset), shuffle=False, rank=rank, world_size=world, pad=False)
    # A private generator: creating the loader's iterator must not draw from the global RNG,
    # or evaluating during training would change the dropout masks that follow.
    return DataLoader(TransformedDataset(dataset, transform), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, generator=torch.Generator())


def evaluate_resolutions(model: nn.Module, dataset: ImageDataset, resolutions: Sequence[int], *,
                         device: torch.device | str = "cpu", batch_size: int = 250, interpolation: str = "bilinear",
                         amp: str = "none", num_workers: int = 0, ctx: DistributedContext | None = None,
                         progress: bool = False, position: int | None = None,
                         resize_to: int | None = None) -> dict[int, EvalResult]:
    """Evaluate ``model`` on ``dataset`` resized to each of ``resolutions`` (no retraining).

    ``resize_to``: test-time resizing, the baseline to zero-shot resolution change: each
    ``resolution`` image is resized again to ``resize_to`` (usually the training resolution)
    before the model sees it.
    """
    device = torch.device(device)
    for resolution in resolutions if resize_to is None else [resize_to]:
        check_resolution(model, resolution)
    results = {}
    for resolution in resolutions:
        loader = evaluation_loader(dataset, resolution, batch_size=batch_size, interpolation=interpolation,
                                   num_workers=num_workers, ctx=ctx, resize_to=resize_to)
        results[resolution] = evaluate(model, loader, device, amp=amp, ctx=ctx, progress=progress,
                                       desc=f"eval @{resolution}px", position=position)
    return results


def _resolve_checkpoint_file(checkpoint: str | Path) -> Path | None:
    path = Path(checkpoint)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        raise MissingFileError(f"no {MODEL_FILE} in directory {path}")
    if path.is_file():
        return path
    return None


def load_checkpoint_model(checkpoint: str | Path, *, model_name: str | None = None,
                          device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint was trained as, load its weights, return ``(model, info)``.

    ``checkpoint`` is a ``.safetensors`` file, a directory holding ``model.safetensors`` (a
    run or a training checkpoint), or a pretrained name such as ``s4nd_iso_micro.mnist5k``.
    ``info`` has ``arch``, ``num_classes``, ``dataset``, ``data_root``, ``classes`` and
    ``train_resolution`` where known. ``model_name`` is required for files without s4vision
    metadata and must match the file's otherwise.
    """
    path = _resolve_checkpoint_file(checkpoint)
    if path is None:
        name = str(checkpoint)
        if "." not in name or name.endswith(".safetensors") or "/" in name:
            raise MissingFileError(f"checkpoint file not found: {checkpoint}")
        return _load_pretrained(name, model_name, device)
    metadata = read_model_metadata(path)
    arch = metadata.get("arch")
    if metadata.get("task", "image") != "image":
        return _load_video_model(path, metadata, model_name, device)
    if arch is None and model_name is None:
        raise InvalidValueError(f"checkpoint {path} has no s4vision metadata; name its architecture with --model")
    if model_name is not None and arch is not None and model_name != arch:
        raise InvalidValueError(f"checkpoint {path} holds a {arch!r} model, not {model_name!r}")
    arch = arch or model_name
    model = create_classifier(arch, in_chans=metadata.get("in_chans"), num_classes=metadata.get("num_classes"),
                              **metadata.get("model_kwargs", {}))
    load_model_weights(model, path, arch=arch)
    info = {"task": "image", "arch": arch, "file": str(path), "in_chans": _in_chans(model),
            "num_classes": metadata.get("num_classes") or _num_classes(model),
            **{k: metadata.get(k) for k in ("dataset", "train_resolution", "classes", "mean", "std")},
            "data_root": metadata.get("data_root") or _sidecar_root(path)}
    return model.to(device).eval(), info


def _load_video_model(path: Path, metadata: dict[str, Any], model_name: str | None,
                      device: torch.device | str) -> tuple[nn.Module, dict[str, Any]]:
    """A video model (temporal head, frame encoder + head, or clip model) from its metadata."""
    from .tasks import build_video_model

    arch = metadata["arch"]
    if model_name is not None and model_name != arch:
        raise InvalidValueError(f"checkpoint {path} holds a {arch!r} model, not {model_name!r}")
    model = build_video_model(metadata["task"], arch, metadata["num_classes"], metadata.get("model_kwargs", {}),
                              encoder_spec=metadata.get("encoder"), feature_dim=metadata.get("feature_dim"),
                              num_frames=metadata.get("num_frames"), resolution=metadata.get("train_resolution"))
    load_model_weights(model, path, arch=arch)
    info = {"file": str(path), **{k: v for k, v in metadata.items() if k not in ("model_kwargs", "epoch", "step")}}
    return model.to(device).eval(), info


def _sidecar_root(path: Path) -> str | None:
    """``data.root`` of the config in the model file's YAML sidecar (files older than the
    ``data_root`` metadata)."""
    sidecar = path.with_suffix(".yaml")
    try:
        return (yaml.safe_load(sidecar.read_text()) or {}).get("config", {}).get("data", {}).get("root")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def _load_pretrained(name: str, model_name: str | None, device: torch.device | str) -> tuple[nn.Module, dict[str, Any]]:
    from ..models.zoo import manifest_entry

    arch = name.split(".")[0]
    if model_name is not None and model_name != arch:
        raise InvalidValueError(f"pretrained weights {name!r} are for {arch!r}, not {model_name!r}")
    if timm.is_model(arch) and name not in timm.list_pretrained(f"{arch}.*"):
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise InvalidValueError(f"no pretrained weights named {name!r} (and no such file); {arch} has: {tags}")
    model = create_classifier(name, pretrained=True)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    entry = manifest_entry(cfg["file"]) if cfg.get("file") else None
    info = {"arch": arch, "file": cfg.get("file"), "in_chans": _in_chans(model), "num_classes": _num_classes(model),
            "dataset": entry.get("dataset") if entry else None,
            "train_resolution": entry.get("train_resolution") if entry else None}
    return model.to(device).eval(), info


def _num_classes(model: nn.Module) -> int | None:
    count = getattr(model, "num_classes", None)
    return int(count) if count else None


def check_classes(info: dict[str, Any], data: ImageDataset, split: str) -> None:
    """Refuse to evaluate a model on a dataset whose classes are not the ones it predicts:
    another class count, or (same dataset name, class names recorded) other names or order."""
    where = f"{data.name}/{split}"
    count = info.get("num_classes")
    if count is not None and count != data.num_classes:
        raise InvalidValueError(f"checkpoint {info.get('file')} predicts {count} classes but {where} has "
                                f"{data.num_classes} ({_some(data.classes)}); its accuracy there would be meaningless")
    names = info.get("classes")
    same_dataset = str(info.get("dataset")).lower().replace("-", "_") == data.name
    if names is not None and same_dataset and list(names) != list(data.classes):
        raise InvalidValueError(f"checkpoint {info.get('file')} was trained on classes {_some(names)} but {where} "
                                f"has {_some(data.classes)}: class indices would not mean the same")


def _some(names: Sequence[str], shown: int = 6) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return "[" + ", ".join(map(str, names[:shown])) + more + "]"


def _in_chans(model: nn.Module) -> int | None:
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return getattr(model, "in_chans", None) or (int(size[0]) if size else None)


def evaluate_checkpoint(checkpoint: str | Path, resolutions: Sequence[int], *, dataset: str | None = None,
                        split: str = "test", root: str | None = None, model_name: str | None = None,
                        device: str = "auto", batch_size: int = 250, interpolation: str = "bilinear",
                        progress: bool = True) -> dict[str, Any]:
    """Load ``checkpoint`` and evaluate it at each of ``resolutions`` on ``dataset``/``split``.

    ``dataset`` and ``root`` default to the ones the checkpoint records. A dataset whose
    classes differ from the model's is refused (:func:`check_classes`).

    Returns ``{"arch", "dataset", "split", "train_resolution", "results": {res: {top1, loss, count}}}``.
    """
    if not resolutions:
        raise InvalidValueError("give at least one resolution to evaluate at")
    device = resolve_device(device)
    model, info = load_checkpoint_model(checkpoint, model_name=model_name, device=device)
    if info.get("task", "image") != "image":
        raise InvalidValueError(f"checkpoint {info['file']} is a {info['task']} model (video): evaluate it on "
                                "videos (s4vision eval CHECKPOINT [--data ...]), not at image resolutions")
    dataset = dataset or info.get("dataset")
    if dataset is None:
        raise InvalidValueError(f"checkpoint {checkpoint} does not record its dataset; pass --dataset")
    if root is None and dataset == info.get("dataset"):
        root = info.get("data_root")
    data = create_image_dataset(dataset, split, root=root, in_chans=info.get("in_chans"))
    check_classes(info, data, split)
    results = evaluate_resolutions(model, data, resolutions, device=device, batch_size=batch_size,
                                   interpolation=interpolation, progress=progress)
    return {**info, "dataset": dataset, "split": split,
            "results": {res: vars(r) for res, r in results.items()}}
