import json

import pytest

from s4vision._io import atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_creates_and_replaces(tmp_path):
    path = tmp_path / "a.txt"
    assert atomic_write_text(path, "one\r\ntwo\n") == path
    assert path.read_bytes() == b"one\r\ntwo\n"  # written as given, no newline translation
    atomic_write_text(path, "three")
    assert path.read_text() == "three"
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "b.json").read_text() == json.dumps({"x": [1, 2]}, indent=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_the_writer_gets_a_temporary_path_beside_the_target(tmp_path):
    seen = []
    atomic_write(tmp_path / "w.safetensors", lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"))
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".w.safetensors.") and tmp.suffix == ".tmp"
    assert not tmp.exists() and (tmp_path / "w.safetensors").read_bytes() == b"x"
