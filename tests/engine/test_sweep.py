import json
import shlex
import statistics

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

import _helpers
from s4vision.data.images import create_image_dataset
from s4vision.engine.config import config_to_dict, list_configs, load_config
from s4vision.engine.evaluate import evaluate_checkpoint, load_checkpoint_model
from s4vision.engine.sweep import (
    SweepEntry,
    _flexi_model,
    entries_for_configs,
    entries_for_models,
    load_sweep,
    run_sweep,
    sweep_tables,
)

OVERRIDES = ["data.dataset=digits", "data.batch_size=64", "optim.lr=0.01", "train.epochs=1", "train.max_steps=6",
             "train.progress=false", "train.threads=1", "train.eval_every=0", "data.eval_split=test"]


def _resized_top1(run_dir, res, train_res):
    """Top-1 % of a run's model on the digits test split resized to ``res`` then to ``train_res``,
    computed with torch's own antialiased interpolation (not the engine's loader)."""
    model, _ = load_checkpoint_model(run_dir)
    data = create_image_dataset("digits", "test")
    images = F.interpolate(data.images, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    images = F.interpolate(images, size=(train_res, train_res), mode="bilinear", antialias=True, align_corners=False)
    images = (images - data.mean[0]) / data.std[0]
    with torch.no_grad():
        correct = (model(images).argmax(1) == data.targets).sum().item()
    return round(100.0 * correct / len(data), 2)


def test_sweep_over_resolutions_and_seeds(tmp_path):
    entries = entries_for_models([_helpers.TINY], "mnist5k_s4nd_iso_micro")
    summary = run_sweep(entries, [6, 8], [4, 6, 12], seeds=[0, 1], variants=["native", "resize"],
                        overrides=OVERRIDES, output_dir=tmp_path)
    runs = {(r["train_resolution"], r["seed"]): r for r in summary["runs"]}
    assert set(runs) == {(6, 0), (6, 1), (8, 0), (8, 1)} and summary["complete"]
    # each cell is the test accuracy of the model trained at that resolution with that seed
    check = evaluate_checkpoint(tmp_path / _helpers.TINY / "6px_seed1", [12], progress=False)
    assert check["train_resolution"] == 6 and runs[6, 1]["top1"]["native"][12] == round(check["results"][12]["top1"], 2)
    assert runs[6, 0]["top1"]["native"][4] is None  # below the model's min_input_size (6)
    # test-time resizing: the 12 px images resized to 6 px, against torch's interpolation
    assert runs[6, 1]["top1"]["resize"][12] == pytest.approx(_resized_top1(tmp_path / _helpers.TINY / "6px_seed1", 12, 6),
                                                            abs=0.6)
    assert runs[8, 0]["top1"]["resize"][4] is not None  # the model sees 8 px images
    assert runs[6, 0]["top1"]["resize"][6] == runs[6, 0]["top1"]["native"][6]
    # mean and sample standard deviation over the seeds
    cell = summary["results"][_helpers.TINY][8]["native"][12]
    values = [runs[8, s]["top1"]["native"][12] for s in (0, 1)]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(statistics.mean(values), abs=0.01)
    assert cell["std"] == pytest.approx(statistics.stdev(values), abs=0.01)
    assert summary["results"][_helpers.TINY][6]["native"][4] is None
    # the run records how to reproduce it, and what it cost
    program, command, config, *overrides = shlex.split(runs[8, 1]["command"])
    assert (program, command) == ("s4vision", "train") and runs[8, 1]["train_seconds"] > 0
    saved = yaml.safe_load((tmp_path / _helpers.TINY / "8px_seed1" / "config.yaml").read_text())
    assert json.loads(json.dumps(config_to_dict(load_config(config, overrides)))) == saved
    # sweep.json round trip and the tables
    assert load_sweep(tmp_path / "sweep.json")["results"] == summary["results"]
    assert json.loads((tmp_path / "sweep.json").read_text())["seeds"] == [0, 1]
    text = sweep_tables(summary)
    assert "trained at 6px" in text and f"{_helpers.TINY} + resize" in text and "±" in text
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_sweep_resumes_without_retraining_or_reevaluating(tmp_path):
    entries = entries_for_models([_helpers.TINY], "mnist5k_s4nd_iso_micro")
    first = run_sweep(entries, [8], [6, 8], overrides=OVERRIDES, output_dir=tmp_path)
    weights = tmp_path / _helpers.TINY / "8px_seed0" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        run_sweep(entries, [8], [6, 8], overrides=OVERRIDES, output_dir=tmp_path)
    # a finished run is not retrained; an evaluation already made is taken from the run's cache
    cache = tmp_path / _helpers.TINY / "8px_seed0" / "sweep_eval.json"
    saved = json.loads(cache.read_text())
    saved["evaluations"]["test"]["native"]["6"] = 12.34
    cache.write_text(json.dumps(saved))
    again = run_sweep(entries, [8], [6, 8, 12], overrides=OVERRIDES, output_dir=tmp_path, resume=True)
    assert weights.stat().st_mtime_ns == stamp
    top1 = again["runs"][0]["top1"]["native"]
    assert top1[6] == 12.34 and top1[8] == first["runs"][0]["top1"]["native"][8] and top1[12] is not None


def test_sweep_refuses_unknown_variants_and_empty_sweeps(tmp_path):
    with pytest.raises(ValueError, match="unknown variant 'bicubic'"):
        run_sweep(entries_for_models([_helpers.TINY]), [8], [8], variants=["bicubic"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one model"):
        run_sweep([], [8], [8], output_dir=tmp_path)


def test_flexi_patch_resampling_keeps_the_token_grid():
    """FlexiViT's PI-resize: a patch upsampled 2x with the resize the weights were resampled for,
    through the resampled embedding, gives the original embedding; so a ViT fed each 2x2 patch
    of an 8 px image upsampled to 4x4 reproduces its 8 px logits at 16 px."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=2, embed_dim=32, depth=1, num_heads=2,
                            in_chans=1, num_classes=3, dynamic_img_size=True).eval()
    x = torch.randn(2, 1, 8, 8)
    patches = x.unfold(2, 2, 2).unfold(3, 2, 2)  # (B, 1, 4, 4, 2, 2)
    up = F.interpolate(patches.reshape(-1, 1, 2, 2), size=(4, 4), mode="bicubic", antialias=True)
    x16 = up.reshape(2, 1, 4, 4, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 16, 16)
    flexi = _flexi_model(vit, 16, 8)
    assert flexi.patch_embed.patch_size == (4, 4) and vit.patch_embed.patch_size == (2, 2)  # a copy
    with torch.no_grad():
        torch.testing.assert_close(flexi(x16), vit(x), atol=1e-4, rtol=1e-4)
    assert _flexi_model(vit, 4, 8).patch_embed.patch_size == (1, 1)
    assert _flexi_model(vit, 6, 8) is None  # 1.5 px patches
    assert _flexi_model(vit, 2, 8) is None  # half a pixel


def test_config_entries_are_labelled_without_the_dataset():
    entries = entries_for_configs(["mnist5k_vit_micro", "mnist5k_s4nd_iso_micro"])
    assert entries == [SweepEntry("vit_micro", "mnist5k_vit_micro"), SweepEntry("s4nd_iso_micro", "mnist5k_s4nd_iso_micro")]
    with pytest.raises(ValueError, match="same label"):
        entries_for_configs(["mnist5k_vit_micro", "mnist5k_vit_micro"])


def test_mnist5k_configs_share_one_recipe_and_select_on_validation():
    """Every model of the resolution study trains with the same budget and recipe: the configs
    differ in their model section (and output directory) only."""
    names = [n for n in list_configs() if n.startswith("mnist5k_")]
    assert {"mnist5k_s4nd_iso_micro", "mnist5k_conv2d_iso_micro", "mnist5k_ccnn_micro", "mnist5k_vit_micro",
            "mnist5k_convnext_micro", "mnist5k_s4nd_convnext_micro"} <= set(names)
    recipes = {}
    for name in names:
        cfg = config_to_dict(load_config(name))
        assert cfg["data"]["train_split"] == "train" and cfg["data"]["eval_split"] == "val"
        del cfg["model"], cfg["train"]["output_dir"]
        recipes[name] = cfg
    first = recipes[names[0]]
    for name, recipe in recipes.items():
        assert recipe == first, f"{name} differs from {names[0]}"
