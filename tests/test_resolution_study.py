"""tools/resolution_study.py: which runs the study makes (no training here)."""
import pytest

from _helpers import load_tool
from s4vision.errors import InvalidValueError


@pytest.fixture(scope="module")
def study():
    return load_tool("resolution_study")


def _resolutions(entries):
    return {e.label: e.train_resolutions for e in entries}


def test_every_model_at_both_resolutions_and_the_progressive_schedule(study):
    entries = study.study_entries(["train.epochs=6"])
    assert list(_resolutions(entries).items()) == [
        ("s4nd_convnext_micro", ()), ("vit_micro", ()), ("convnext_micro", ()), ("s4nd_iso_micro", ()),
        ("s4nd_iso_micro_14to28", (28,)), ("s4nd_iso_micro_bandlimit0.4", ()), ("conv2d_iso_micro", ()),
        ("ccnn_micro", ())]  # the slowest last
    progressive = next(e for e in entries if e.label == "s4nd_iso_micro_14to28")
    assert progressive.overrides == ("train.progressive=[[0,14],[3,28]]",)  # half the epochs at each size
    tuned = next(e for e in entries if e.label == "s4nd_iso_micro_bandlimit0.4")
    assert (tuned.config, tuned.overrides) == ("mnist5k_s4nd_iso_micro", ("model.kwargs.bandlimit=0.4",))


def test_train_14_only_cuts_the_28px_column_of_the_named_models(study):
    entries = study.study_entries(["train.epochs=2"], ["ccnn_micro"])
    assert _resolutions(entries)["ccnn_micro"] == (14,)
    assert _resolutions(entries)["s4nd_iso_micro"] == ()
    with pytest.raises(InvalidValueError, match="not a model of the study: resnet50"):
        study.study_entries([], ["resnet50"])
