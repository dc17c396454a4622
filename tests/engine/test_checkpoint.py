import io
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from s4vision.engine.checkpoint import (
    CheckpointManager,
    DamagedCheckpointError,
    capture_rng_state,
    load_model_weights,
    read_model_metadata,
    restore_rng_state,
    save_model_file,
    verify_checkpoint,
)


def _net(width=4):
    torch.manual_seed(width)
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def test_model_file_round_trip_is_exact(tmp_path):
    src, dst = _net(), _net()
    dst[0].weight.data.zero_()
    path = save_model_file(tmp_path / "m.safetensors", src.state_dict(), {"arch": "mlp", "train_resolution": 14},
                           sidecar={"note": "hello"})
    meta = load_model_weights(dst, path, arch="mlp")
    assert meta == {"arch": "mlp", "train_resolution": 14} == read_model_metadata(path)
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)
    assert "hello" in (tmp_path / "m.yaml").read_text()
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


class _Tied(nn.Module):
    """Two layers sharing one weight (as a language model ties its embedding and output)."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight


def test_tied_weights_round_trip(tmp_path):
    src = _Tied(seed=1)
    state = src.state_dict()
    assert state["encoder.weight"].data_ptr() == state["decoder.weight"].data_ptr()  # one storage
    path = save_model_file(tmp_path / "t.safetensors", state, {"arch": "tied"})
    saved = load_file(str(path))
    assert saved.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(saved[key], value), key

    dst = _Tied(seed=2)
    assert not torch.equal(dst.encoder.weight, src.encoder.weight)
    assert load_model_weights(dst, path, arch="tied") == {"arch": "tied"}
    assert dst.decoder.weight is dst.encoder.weight  # still tied after loading
    for key, value in dst.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_another_architecture_is_refused_with_both_names(tmp_path):
    path = save_model_file(tmp_path / "m.safetensors", _net().state_dict(), {"arch": "mlp"})
    with pytest.raises(ValueError, match="holds a 'mlp' model, not 'resnet'"):
        load_model_weights(_net(), path, arch="resnet")
    with pytest.raises(ValueError, match="does not fit.*mis-shaped"):
        load_model_weights(_net(width=5), path)
    with pytest.raises(ValueError, match="does not fit.*missing"):
        load_model_weights(nn.Sequential(*_net(), nn.Linear(2, 2)), path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_model_metadata(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_model_metadata(tmp_path / "junk.safetensors")


def test_manager_keeps_the_newest_complete_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 15):
        manager.save(step, _net().state_dict(), {"arch": "mlp"}, {"global_step": step})
    assert [p.name for p in manager.checkpoints()] == ["step_00000010", "step_00000015"]
    # a checkpoint torn by a crash (still under its temporary name) is never picked
    torn = tmp_path / ".tmp-step_00000020"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"")
    assert manager.latest().name == "step_00000015"
    _, ema, state = CheckpointManager.load(manager.latest())
    assert ema is None and state == {"global_step": 15}


def test_rng_state_round_trip():
    """Through torch.save / torch.load(weights_only=True), as checkpoints store it."""
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(10), random.random(), np.random.rand()
    restore_rng_state(state)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


# -- verification: manifests, damaged checkpoints, fallback ------------------------------------------


def _three_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints", keep=3)
    for step in (5, 10, 15):
        manager.save(step, _net(step).state_dict(), {"arch": "mlp"}, {"global_step": step})
    return manager


def test_manifest_records_the_size_and_sha256_of_every_file(tmp_path):
    import hashlib
    import json

    checkpoint = _three_checkpoints(tmp_path).latest()
    files = json.loads((checkpoint / "manifest.json").read_text())["files"]
    assert set(files) == {"model.safetensors", "trainer_state.pt"}
    for name, entry in files.items():
        data = (checkpoint / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify_checkpoint(checkpoint) is True


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, name, reason", [
    (_truncate, "trainer_state.pt", "bytes"),
    (_truncate, "model.safetensors", "bytes"),
    (_flip_last_byte, "trainer_state.pt", "SHA-256"),
    (lambda path: path.unlink(), "model.safetensors", "missing"),
])
def test_damage_is_found_and_named(tmp_path, damage, name, reason):
    manager = _three_checkpoints(tmp_path)
    newest = manager.latest()
    damage(newest / name)
    with pytest.raises(DamagedCheckpointError, match=f"{newest.name}.*{name}.*{reason}"):
        CheckpointManager.load(newest)
    with pytest.warns(RuntimeWarning, match=f"{newest}.*damaged.*{name}.*moved to .*damaged-step_00000015"):
        path, (model_state, _, state) = manager.load_newest_intact()
    assert path.name == "step_00000010" and state == {"global_step": 10}
    assert torch.equal(model_state["0.weight"], _net(10).state_dict()["0.weight"])
    # set aside (kept for inspection), no longer listed, so new checkpoints are not pruned in its favour
    assert [p.name for p in manager.checkpoints()] == ["step_00000005", "step_00000010"]
    assert (tmp_path / "checkpoints" / ".damaged-step_00000015").is_dir()


def test_every_checkpoint_damaged_is_an_error(tmp_path):
    manager = _three_checkpoints(tmp_path)
    for checkpoint in manager.checkpoints():
        _truncate(checkpoint / "trainer_state.pt")
    with pytest.warns(RuntimeWarning), pytest.raises(DamagedCheckpointError, match="every checkpoint.*damaged"):
        manager.load_newest_intact()
    assert CheckpointManager(tmp_path / "none").load_newest_intact() is None


def test_a_checkpoint_without_manifest_loads_unverified_and_fails_by_name(tmp_path):
    """Checkpoints written before manifests existed: loading them is the only check."""
    manager = _three_checkpoints(tmp_path)
    newest = manager.latest()
    (newest / "manifest.json").unlink()
    assert verify_checkpoint(newest) is False
    assert CheckpointManager.load(newest)[2] == {"global_step": 15}
    _truncate(newest / "trainer_state.pt")
    with pytest.raises(DamagedCheckpointError, match=f"{newest.name} is damaged: cannot read trainer_state.pt"):
        CheckpointManager.load(newest)


def test_a_full_disk_while_saving_leaves_the_previous_checkpoints_intact(tmp_path, monkeypatch):
    import errno

    manager = _three_checkpoints(tmp_path)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match="No space left"):
        manager.save(20, _net().state_dict(), {"arch": "mlp"}, {"global_step": 20})
    assert [p.name for p in manager.checkpoints()] == ["step_00000005", "step_00000010", "step_00000015"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000005", "step_00000010", "step_00000015"]  # no temporary directory left behind
    for checkpoint in manager.checkpoints():
        verify_checkpoint(checkpoint)


def test_a_truncated_model_file_is_named(tmp_path):
    path = save_model_file(tmp_path / "m.safetensors", _net().state_dict(), {"arch": "mlp"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # header intact, data cut
    with pytest.raises(ValueError, match="m.safetensors is not a readable safetensors file"):
        load_model_weights(_net(), path)
