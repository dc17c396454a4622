"""Train-resolution x test-resolution sweeps over several models."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .._io import atomic_write_json
from .config import load_config
from .evaluate import evaluate_checkpoint
from .report import format_table
from .train import train
from ..errors import InvalidValueError

__all__ = ["run_sweep", "sweep_tables"]


def run_sweep(models: Sequence[str], train_resolutions: Sequence[int], test_resolutions: Sequence[int], *,
              config: str | Path | None = None, overrides: Sequence[str] = (), output_dir: str | Path = "outputs/sweep",
              resume: bool = False) -> dict[str, Any]:
    """Train every model at every training resolution, evaluate each at every test resolution.

    Runs go to ``output_dir/<model>_<res>px``; with ``resume``, finished runs are re-evaluated
    rather than retrained and interrupted ones continue. Returns (and writes to
    ``output_dir/sweep.json``) ``{"results": {model: {train_res: {test_res: top1}}}, ...}``.
    """
    if not models or not train_resolutions or not test_resolutions:
        raise InvalidValueError("a sweep needs at least one model, one training and one test resolution")
    output_dir = Path(output_dir)
    results: dict[str, dict[int, dict[int, float]]] = {}
    for model in models:
        for train_res in train_resolutions:
            run_dir = output_dir / f"{model}_{train_res}px"
            cfg = load_config(config, [*overrides, f"model.name={model}", f"data.resolution={train_res}",
                                       "train.progressive=[]", f"train.output_dir={run_dir}",
                                       f"eval.resolutions=[{','.join(map(str, test_resolutions))}]"])
            if resume and (run_dir / "model.yaml").is_file():
                done = evaluate_checkpoint(run_dir, test_resolutions, split=cfg.data.eval_split, root=cfg.data.root,
                                           device=cfg.train.device, batch_size=cfg.data.eval_batch_size,
                                           interpolation=cfg.data.interpolation, progress=cfg.train.progress)
                top1 = {res: r["top1"] for res, r in done["results"].items()}
            else:
                top1 = {res: r.top1 for res, r in train(cfg, resume=resume).zero_shot.items()}
            results.setdefault(model, {})[train_res] = top1
    summary = {"train_resolutions": list(train_resolutions), "test_resolutions": list(test_resolutions),
               "config": str(config) if config else None, "overrides": list(overrides), "results": results}
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "sweep.json", summary, indent=2)
    return summary


def sweep_tables(summary: dict[str, Any], markdown: bool = False) -> str:
    """One table per model: rows are training resolutions, columns test resolutions (top-1 %)."""
    tests = summary["test_resolutions"]
    blocks = []
    for model, by_train in summary["results"].items():
        rows = [[f"train {tr}px", *(by_train[tr].get(te) for te in tests)] for tr in summary["train_resolutions"]]
        blocks.append(f"{model}\n" + format_table(["", *(f"test {te}px" for te in tests)], rows, markdown=markdown))
    return "\n\n".join(blocks)
