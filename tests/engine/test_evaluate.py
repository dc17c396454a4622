"""evaluate_checkpoint: what it reads from a checkpoint, and the mismatches it refuses."""
import numpy as np
import pytest
from PIL import Image

import _helpers
from s4vision.engine.config import load_config
from s4vision.engine.evaluate import evaluate_checkpoint
from s4vision.engine.train import train

BASE = [f"model.name={_helpers.TINY}", "data.resolution=8", "data.batch_size=16", "train.epochs=1",
        "train.max_steps=2", "train.progress=false", "train.threads=1"]


def _image_folder(root, classes, per_class=6):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-class model trained on an image folder and a 10-class one trained on digits."""
    tmp = tmp_path_factory.mktemp("eval")
    folder = _image_folder(tmp / "pets", ["cat", "dog"])
    pets = train(load_config(None, [*BASE, "data.dataset=imagefolder", f"data.root={folder}",
                                    f"train.output_dir={tmp / 'pets_run'}"]))
    digits = train(load_config(None, [*BASE, "data.dataset=digits", f"train.output_dir={tmp / 'digits_run'}"]))
    return tmp, folder, pets.model_file, digits.model_file


def test_an_image_folder_run_is_evaluated_on_its_recorded_root(runs, monkeypatch, tmp_path):
    _, folder, pets, _ = runs
    monkeypatch.chdir(tmp_path)  # the recorded root is absolute: the working directory does not matter
    summary = evaluate_checkpoint(pets, [8], progress=False)
    assert summary["dataset"] == "imagefolder" and summary["data_root"] == str(folder.resolve())
    assert summary["results"][8]["count"] == 12


def test_a_dataset_with_other_classes_is_refused(runs, tmp_path):
    tmp, folder, pets, digits = runs
    with pytest.raises(ValueError, match=r"predicts 10 classes but imagefolder/test has 2 \(\[cat, dog\]\)"):
        evaluate_checkpoint(digits, [8], dataset="imagefolder", root=folder, progress=False)
    with pytest.raises(ValueError, match=r"predicts 2 classes but digits/test has 10"):
        evaluate_checkpoint(pets, [8], dataset="digits", progress=False)
    other = _image_folder(tmp_path / "other", ["cat", "cow"])  # same count, other names
    with pytest.raises(ValueError, match=r"trained on classes \[cat, dog\] but imagefolder/test has \[cat, cow\]"):
        evaluate_checkpoint(pets, [8], root=other, progress=False)


def test_an_unknown_pretrained_tag_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"no pretrained weights named 's4nd_iso_micro.nope'.*s4nd_iso_micro.mnist5k"):
        evaluate_checkpoint("s4nd_iso_micro.nope", [14], progress=False)
