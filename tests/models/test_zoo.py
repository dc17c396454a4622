"""The model zoo: every shipped checkpoint loads offline and reproduces its recorded accuracy."""
import shutil
import struct
import zipfile

import pytest
import timm
import torch

from safetensors.torch import load_file, save_file

import s4vision  # noqa: F401  (registers the models)
from s4vision.data.images import create_image_dataset
from s4vision.engine.evaluate import evaluate_resolutions
from s4vision.models import zoo
from s4vision.models.zoo import ZOO_DIR, load_manifest, sha256sum

ENTRIES = load_manifest().get("checkpoints", [])
REQUIRED = {"model", "tag", "file", "sha256", "dataset", "train_resolution", "accuracy", "command"}


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
    # every resolution the manifest lists, 56 px (the 28 px digits upsampled) included: minutes on 2 cores
    recorded = {int(res): float(acc) for res, acc in entry["accuracy"].items()}
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


# -- which files the zoo's checksums apply to, and damaged pretrained files ----------------------


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """A copy of the zoo directory standing in for this installation's (its files can be damaged)."""
    copy = tmp_path / "model_zoo"
    shutil.copytree(zoo.ZOO_DIR, copy)
    monkeypatch.setattr(zoo, "ZOO_DIR", copy)
    monkeypatch.setattr(zoo, "MANIFEST", copy / "manifest.yaml")
    return copy


def _create(entry, path, **kwargs):
    return timm.create_model(_id(entry), pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)


def test_corrupted_zoo_file_names_file_entry_and_hash(zoo_copy):
    entry = _first()
    path = zoo_copy / entry["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # still a readable safetensors file: only the checksum tells
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path.name} \({_id(entry)}\) is corrupted.*{entry['sha256']}"):
        _create(entry, path)


def test_zoo_file_missing_from_the_installation_names_entry_and_hash(zoo_copy):
    entry = _first()
    (zoo_copy / entry["file"]).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{_id(entry)}: its file .*{entry['file']} is missing.*{entry['sha256']}"):
        _create(entry, zoo_copy / entry["file"])


def test_own_weights_under_a_zoo_file_name_elsewhere_load(tmp_path):
    """The checksum belongs to the zoo's file, not to its name: a user's fine-tuned weights saved
    as ``<model>.mnist5k.safetensors`` in their own folder are theirs and load as they are."""
    entry = _first()
    own = {k: v + 1 if v.is_floating_point() else v for k, v in load_file(ZOO_DIR / entry["file"]).items()}
    path = tmp_path / entry["file"]
    save_file(own, str(path))
    model = _create(entry, path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, own[key], msg=lambda m: f"{key}: {m}")


def _zoo_weights(name):
    return {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}


def test_damaged_safetensors_named(tmp_path):
    entry = _first()
    path = tmp_path / "weights.safetensors"
    save_file(_zoo_weights(entry["model"]), str(path))
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match=rf"cannot read weights file .*{path.name}.*not a valid safetensors"):
        _create(entry, path)


def _member_offset(path, suffix):
    """Where the bytes of the zip member ending in ``suffix`` start in ``path``, and their count."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    header = path.read_bytes()[info.header_offset:info.header_offset + 30]
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


@pytest.mark.parametrize("damage", ["truncated", "pickle byte", "tensor byte"])
def test_damaged_pth_named_without_weights_only_advice(tmp_path, damage):
    entry = _first()
    path = tmp_path / "weights.pth"
    torch.save(_zoo_weights(entry["model"]), path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "pickle byte":  # torch.load would advise weights_only=False
        start, size = _member_offset(path, "/data.pkl")
        data[start + 2] ^= 0x5A
    else:  # in a tensor's data: torch.load itself would return the altered values silently
        start, size = _member_offset(path, "/data/0")
        data[start + size // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"weights file .*{path.name} is damaged") as err:
        _create(entry, path)
    assert "weights_only" not in str(err.value)


def test_intact_pth_loads(tmp_path):
    entry = _first()
    weights = _zoo_weights(entry["model"])
    path = tmp_path / "weights.pth"
    torch.save(weights, path)
    model = _create(entry, path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[key])


def test_missing_user_file_named(tmp_path):
    entry = _first()
    gone = tmp_path / entry["file"]  # a zoo file's name, but not the zoo's file: no hash to report
    with pytest.raises(FileNotFoundError, match=rf"not found: .*{gone.name}$"):
        _create(entry, gone)
