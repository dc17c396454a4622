"""Video evaluation: the multi-clip protocol, its metrics, a JSON report and a confusion matrix.

Long-video papers report accuracy per *video*: several clips are cut from each video (uniform
positions or sliding windows, :mod:`s4vision.data.clips`), the model's logits are averaged over
a video's clips, and the average is scored. :func:`video_logits` does the first part over a
dataset whose items are clips (``dataset.clip_videos`` names each item's video), on one process
or sharded over ``torchrun`` ranks (the per-video sums are all-reduced); :func:`video_metrics`
the second: top-1, top-5, mean cross-entropy, per-class accuracy and the confusion matrix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import InvalidValueError
from ..models.heads import forward_with_time
from .distributed import DistributedContext, all_reduce_sum
from .evaluate import autocast
from .sampler import ResumableSampler

__all__ = ["video_logits", "video_metrics", "plot_confusion", "collate_samples"]


def collate_samples(batch: Sequence[Any]):
    """``default_collate``, with one clear error when the items' shapes differ (feature
    sequences of different lengths cannot be stacked)."""
    from torch.utils.data import default_collate

    shapes = {tuple(item[0].shape) for item in batch}
    if len(shapes) > 1:
        raise InvalidValueError(f"cannot batch sequences of different shapes {sorted(shapes)[:3]}: set "
                                "video.num_frames to cut clips of one length, or data.batch_size=1")
    return default_collate(batch)


def _same_shapes(dataset: Dataset) -> bool:
    entries = getattr(dataset, "entries", None)
    if entries is None or getattr(dataset, "sampler", None) is not None:
        return True  # clips of a sampler all have its length
    return len({tuple(entry["shape"]) for entry in entries}) == 1


@torch.no_grad()
def video_logits(model: nn.Module, dataset: Dataset, *, num_classes: int, device: torch.device,
                 batch_size: int = 8, amp: str = "none", ctx: DistributedContext | None = None,
                 num_workers: int = 0, progress: bool = False, desc: str = "eval",
                 position: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean logits per video (V, C) float64, clips per video (V,))`` of ``model`` over the
    clips of ``dataset`` (each rank takes its share under ``ctx``; the result is complete on
    every rank). Frame times go to models that take them."""
    videos = torch.as_tensor(dataset.clip_videos)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    sampler = ResumableSampler(len(dataset), shuffle=False, rank=rank, world_size=world, pad=False)
    size = batch_size if _same_shapes(dataset) else 1
    loader = DataLoader(dataset, batch_size=size, sampler=sampler, num_workers=num_workers,
                        generator=torch.Generator(), collate_fn=collate_samples)
    sums = torch.zeros(dataset.num_videos, num_classes, dtype=torch.float64)
    counts = torch.zeros(dataset.num_videos, dtype=torch.float64)
    order = iter(list(sampler))
    was_training = model.training
    model.eval()
    for inputs, _, timestamps in tqdm(loader, desc=desc, leave=False, disable=not progress, position=position):
        with autocast(device, amp):
            logits = forward_with_time(model, inputs.to(device), timestamps.to(device))
        owners = videos[[next(order) for _ in range(len(inputs))]]
        sums.index_add_(0, owners, logits.double().cpu())
        counts.index_add_(0, owners, torch.ones(len(owners), dtype=torch.float64))
    model.train(was_training)
    if ctx is not None:
        all_reduce_sum(sums, ctx)
        all_reduce_sum(counts, ctx)
    if not (counts > 0).all():
        raise InvalidValueError("some videos have no clip to evaluate")
    return sums / counts[:, None], counts


def video_metrics(logits: torch.Tensor, labels: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (percent), mean cross-entropy, per-class accuracy and the
    confusion matrix (rows: true class, columns: predicted) of per-video ``logits (V, C)``."""
    labels = torch.as_tensor(list(labels), dtype=torch.long)
    if logits.ndim != 2 or logits.shape[0] != len(labels):
        raise InvalidValueError(f"logits {tuple(logits.shape)} do not match {len(labels)} labels")
    num_classes = logits.shape[1]
    if len(labels) == 0:
        raise InvalidValueError("cannot evaluate on an empty dataset")
    top = logits.topk(min(5, num_classes), dim=1).indices
    predicted = top[:, 0]
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for index, name in enumerate(classes):
        count = int(confusion[index].sum())
        per_class[str(name)] = {"top1": 100.0 * int(confusion[index, index]) / count if count else None,
                                "count": count}
    return {
        "top1": 100.0 * (predicted == labels).double().mean().item(),
        "top5": 100.0 * (top == labels[:, None]).any(dim=1).double().mean().item(),
        "loss": F.cross_entropy(logits.double(), labels).item(),
        "count": len(labels),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Write the confusion matrix (rows: true class, columns: predicted; each row normalised
    to fractions, counts printed when there are few classes) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    rows = matrix.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, min(16.0, 0.45 * len(classes) + 2))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow((matrix / rows).numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90 if len(classes) > 10 else 0)
    ax.set_yticks(ticks, [str(c) for c in classes])
    if len(classes) <= 20:
        for i in ticks:
            for j in ticks:
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] / rows[i, 0] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (rows sum to 1)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate_video_checkpoint(checkpoint: str | Path, data: str | None = None, *, subset: str | None = None,
                              root: str | None = None, format: str | None = None, clips: int | None = None,
                              windows: str | None = None, stride: float | None = None, device: str = "auto",
                              batch_size: int = 8, skip_bad: bool = False, progress: bool = True,
                              report_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a video checkpoint with the multi-clip protocol.

    ``data`` defaults to the held-out data the run was validated on, and the protocol to the
    one it was validated with (``clips``, ``windows``, ``stride`` override the checkpoint's
    ``video.eval_clips``, ``video.eval_windows``, ``video.eval_stride``), so the figures equal
    the run's last held-out ones. Returns the report: the checkpoint, data and protocol, top-1 /
    top-5 / loss / per-class accuracy / confusion matrix over videos, and each video's
    prediction; with ``report_dir`` it is also written there as ``report.json`` with
    ``confusion.png``.
    """
    from dataclasses import asdict, replace

    from .._io import atomic_write_json
    from .distributed import resolve_device
    from .evaluate import load_checkpoint_model
    from .tasks import ClipSpec, open_video_dataset

    device = resolve_device(device)
    model, info = load_checkpoint_model(checkpoint, device=device)
    if info.get("task", "image") == "image":
        raise InvalidValueError(f"checkpoint {info['file']} is an image model: evaluate it at image resolutions "
                                "(--resolutions), not on videos")
    spec = ClipSpec(**info["video"]["clips"])
    overrides = {k: v for k, v in (("eval_clips", clips), ("eval_windows", windows), ("eval_stride", stride))
                 if v is not None}
    spec = replace(spec, **overrides)
    if spec.eval_windows == "sliding" and spec.sampler != "window":
        raise InvalidValueError(f"sliding windows need a model trained on windows (video.sampler=window); this one "
                                f"was trained with video.sampler={spec.sampler}")
    dataset = open_video_dataset(info, data, model=model, spec=spec, subset=subset, root=root, format=format,
                                 skip_bad=skip_bad, progress=progress)
    classes = info["classes"]
    logits, counts = video_logits(model, dataset, num_classes=len(classes), device=device, batch_size=batch_size,
                                  progress=progress)
    metrics = video_metrics(logits, dataset.video_labels, classes)
    probabilities = logits.softmax(dim=1)
    report = {
        "checkpoint": info["file"], "task": info["task"], "arch": info["arch"],
        "data": str(getattr(dataset, "index_path", None) or getattr(dataset, "annotation_file", data)),
        "protocol": {**asdict(spec), "clips_per_video": counts.tolist()[:1] if counts.unique().numel() == 1
                     else "varies"},
        **metrics,
        "videos": [{"path": name, "label": classes[label], "predicted": classes[int(p.argmax())],
                    "probability": float(p.max())}
                   for name, label, p in zip(dataset.video_names, dataset.video_labels, probabilities)],
    }
    if report_dir is not None:
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(report_dir / "report.json", report, indent=1)
        plot_confusion(metrics["confusion"], classes, report_dir / "confusion.png",
                       title=f"{info['arch']} on {Path(report['data']).name}: top-1 {metrics['top1']:.1f}%")
        report["files"] = {"report": str(report_dir / "report.json"), "confusion": str(report_dir / "confusion.png")}
    return report
