"""The time axis of s4nd_convnext3d: a clip's frame rate sets its rate along time."""
import pytest
import timm
import torch

import s4vision.models  # noqa: F401  (registers the models)
from s4vision.layers import S4ND
from s4vision.sampling import _GridSemantics, uniform_timestamps


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("s4nd_convnext3d_atto", num_classes=3, img_size=32, num_frames=8, train_fps=8,
                             depths=(1, 1, 1, 1), dims=(8, 16, 16, 16), patch_size=(2, 4, 4)).eval()


def time_rates(model, clip, **time):
    """The rates along time that the S4ND layers' grids give, recorded by a spy."""
    seen = []
    original = _GridSemantics.rates

    def spy(self, sizes, rate=None):
        rates = original(self, sizes, rate)
        seen.append(rates[0])
        return rates

    _GridSemantics.rates = spy
    try:
        with torch.no_grad():
            logits = model(clip, **time)
    finally:
        _GridSemantics.rates = original
    assert len(seen) >= sum(isinstance(m, S4ND) for m in model.modules())
    return set(seen), logits


def test_frame_rate_sets_the_rate_along_time(model):
    clip = torch.randn(1, 3, 16, 32, 32)  # 16 frames: 2 s at the training 8 fps
    assert time_rates(model, clip)[0] == {0.5}  # without a frame rate: the training extent, sampled finer
    assert time_rates(model, clip, fps=8)[0] == {1.0}  # 2 s of video at the training rate
    assert time_rates(model, clip, fps=16)[0] == {0.5}
    rates, logits = time_rates(model, clip, timestamps=uniform_timestamps(16, 4, start=3.0))
    assert rates == {2.0}
    torch.testing.assert_close(logits, model(clip, fps=4))
    assert model.clock.train_fps == 8 and float(model.state_dict()["clock.fps"]) == 8


def test_same_seconds_at_two_frame_rates(model):
    """One second of a slowly varying clip at 8 and 16 fps gives nearly the same logits."""
    t8, t16 = uniform_timestamps(8, 8), uniform_timestamps(16, 16)
    pattern = torch.randn(1, 3, 1, 32, 32)
    clip = lambda t: pattern * torch.cos(2 * torch.pi * 0.3 * t).float().view(1, 1, -1, 1, 1)
    with torch.no_grad():
        a, b = model(clip(t8), fps=8), model(clip(t16), fps=16)
    assert ((a - b).norm() / a.norm()) < 0.05


def test_bad_time_input(model):
    clip = torch.randn(1, 3, 8, 32, 32)
    with pytest.raises(ValueError, match="uniformly spaced"):
        model(clip, timestamps=torch.tensor([0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8], dtype=torch.float64))
    with pytest.raises(ValueError, match="increasing"):
        model(clip, timestamps=uniform_timestamps(8, 8).flip(0))
    with pytest.raises(ValueError, match="not both"):
        model(clip, timestamps=uniform_timestamps(8, 8), fps=8)
    image_model = timm.create_model("s4nd_convnext_atto", num_classes=3, img_size=32)
    with pytest.raises(ValueError, match="2D"):
        image_model(torch.randn(1, 3, 32, 32), fps=8)
    with pytest.raises(ValueError, match="train_fps"):
        timm.create_model("s4nd_convnext_atto", train_fps=8)
