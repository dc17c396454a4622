"""The model zoo: every shipped checkpoint loads offline and reproduces its recorded accuracy."""
import shutil

import pytest
import timm
import torch

import s4vision  # noqa: F401  (registers the models)
from s4vision.data.images import create_image_dataset
from s4vision.engine.evaluate import evaluate_resolutions
from s4vision.models.zoo import ZOO_DIR, load_manifest, sha256sum

ENTRIES = load_manifest().get("checkpoints", [])
REQUIRED = {"model", "tag", "file", "sha256", "dataset", "train_resolution", "accuracy", "command"}
# Re-evaluating at 56 px costs minutes on a 2-core CPU (16x the pixels of 14 px); the recorded
# 56 px figures are checked by hand with `s4vision eval <model>.mnist5k --resolutions 56`.
MAX_TEST_RESOLUTION = 28


def _id(entry):
    return f"{entry['model']}.{entry['tag']}"


def test_manifest_lists_our_micro_models():
    assert {"s4nd_iso_micro", "conv2d_iso_micro", "ccnn_micro"} <= {e["model"] for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=_id)
def test_entry_is_complete_small_and_intact(entry):
    assert REQUIRED <= set(entry), f"missing fields: {REQUIRED - set(entry)}"
    path = ZOO_DIR / entry["file"]
    assert path.is_file()
    assert path.stat().st_size < 4 * 2**20  # small enough to live in git
    assert sha256sum(path) == entry["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=_id)
def test_checkpoint_reproduces_its_recorded_accuracy(entry):
    torch.set_num_threads(2)
    model = timm.create_model(_id(entry), pretrained=True).eval()
    held_out = create_image_dataset(entry["dataset"], "test")
    recorded = {int(res): float(acc) for res, acc in entry["accuracy"].items() if int(res) <= MAX_TEST_RESOLUTION}
    assert entry["train_resolution"] in recorded
    measured = evaluate_resolutions(model, held_out, sorted(recorded))
    for res, acc in recorded.items():
        assert abs(measured[res].top1 - acc) <= 0.5, f"{_id(entry)} at {res}px: {measured[res].top1} vs {acc}"


def test_cli_evaluates_a_pretrained_name(capsys):
    from s4vision.cli import main

    entry = _first()
    res = entry["train_resolution"]
    assert main(["eval", _id(entry), "--resolutions", str(res), "--no-progress"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{res}px"))
    assert abs(float(row.split()[1]) - float(entry["accuracy"][res])) <= 0.5


def _first():
    if not ENTRIES:
        pytest.skip("empty manifest")
    return ENTRIES[0]


def test_corrupted_checkpoint_names_file_and_hash(tmp_path):
    entry = _first()
    copy = tmp_path / entry["file"]  # same name, so the manifest's hash applies
    shutil.copyfile(ZOO_DIR / entry["file"], copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{copy.name}.*corrupted.*{entry['sha256']}"):
        timm.create_model(_id(entry), pretrained=True, pretrained_cfg_overlay={"file": str(copy)})


def test_missing_checkpoint_names_file_and_hash(tmp_path):
    entry = _first()
    gone = tmp_path / entry["file"]
    with pytest.raises(FileNotFoundError, match=rf"{gone.name}.*{entry['sha256']}"):
        timm.create_model(_id(entry), pretrained=True, pretrained_cfg_overlay={"file": str(gone)})
