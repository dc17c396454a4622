"""``s4vision.sampling``: cell centres, kernel offsets and reference grids, against hand-built numpy grids."""
import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

from s4vision.sampling import GridView, ReferenceGrid, cell_centres, check_rates, kernel_offsets, offset_grid


# -- coordinates -------------------------------------------------------------------------------


def test_cell_centres():
    np.testing.assert_allclose(cell_centres(3).numpy(), [1 / 6, 1 / 2, 5 / 6], rtol=1e-6)
    np.testing.assert_allclose(cell_centres(4, extent=2.0, dtype=torch.float64).numpy(), [0.25, 0.75, 1.25, 1.75])
    assert cell_centres(5, dtype=torch.float64).dtype == torch.float64
    assert cell_centres(1).tolist() == [0.5]


def test_kernel_offsets():
    np.testing.assert_allclose(kernel_offsets(3).numpy(), [-2 / 3, -1 / 3, 0, 1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(kernel_offsets(2, 0.25).numpy(), [-0.25, 0, 0.25])
    assert kernel_offsets(1).tolist() == [0.0]


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_kernel_offsets_are_the_differences_of_cell_centres(size):
    """``(2 size - 1,)``: every difference ``x_i - x_j`` of two cell centres, once, in order."""
    centres = (np.arange(size) + 0.5) / size
    differences = np.unique(np.round(np.subtract.outer(centres, centres), 12))
    np.testing.assert_allclose(kernel_offsets(size, dtype=torch.float64).numpy(), differences, atol=1e-12)


def test_offset_grid():
    """``(3, 5, 2)`` for sizes ``(2, 3)``: ``grid[i, j] = (offsets_2[i], offsets_3[j])``."""
    grid = offset_grid((2, 3), dtype=torch.float64).numpy()
    rows, cols = [-1 / 2, 0, 1 / 2], [-2 / 3, -1 / 3, 0, 1 / 3, 2 / 3]
    expected = np.array([[[r, c] for c in cols] for r in rows])
    np.testing.assert_allclose(grid, expected, atol=1e-12)
    spaced = offset_grid((2, 3), spacings=(0.1, 1.0), dtype=torch.float64).numpy()
    expected = np.array([[[r, c] for c in (-2, -1, 0, 1, 2)] for r in (-0.1, 0, 0.1)])
    np.testing.assert_allclose(spaced, expected, atol=1e-12)
    assert offset_grid((4,)).shape == (7, 1)
    assert offset_grid((2, 3, 4)).shape == (3, 5, 7, 3)


@pytest.mark.parametrize("size", [1, 3, 4, 7])
def test_coarse_offsets_are_fine_offsets(size):
    """Every offset at ``size`` samples is an offset at ``2 size`` (so grids at two resolutions agree)."""
    coarse = kernel_offsets(size, dtype=torch.float64).numpy()
    fine = kernel_offsets(2 * size, dtype=torch.float64).numpy()
    assert all(np.isclose(fine, c, atol=1e-12).any() for c in coarse)
    coarse = offset_grid((size, 2), dtype=torch.float64).reshape(-1, 2).numpy()
    fine = offset_grid((2 * size, 4), dtype=torch.float64).reshape(-1, 2).numpy()
    assert all(np.isclose(fine, c, atol=1e-12).all(-1).any() for c in coarse)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cell_centres(0), "size.*0"),
        (lambda: cell_centres(2.5), "size.*2.5"),
        (lambda: cell_centres(3, extent=-1.0), "extent.*-1.0"),
        (lambda: kernel_offsets(-2), "size.*-2"),
        (lambda: kernel_offsets(3, 0.0), "spacing.*0.0"),
        (lambda: offset_grid(()), "at least one axis"),
        (lambda: offset_grid((2, 3), spacings=(0.5,)), "1 spacings for 2 axes"),
    ],
)
def test_coordinate_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- reference grids ---------------------------------------------------------------------------


def test_unset_grid_uses_each_input_as_its_own_reference():
    grid = ReferenceGrid(2)
    assert not grid.is_set and grid.sizes is None
    assert grid.rates((7, 9)) == (1.0, 1.0)
    assert grid.spacings((7, 9)) == pytest.approx((1 / 7, 1 / 9))
    assert grid.state_dict()["size"].tolist() == [0, 0]


def test_observe_adopts_the_first_training_size_only():
    grid = ReferenceGrid(2).eval()
    grid.observe((8, 12))
    assert grid.sizes is None  # not in training
    grid.train()
    grid.observe((8, 12))
    grid.observe((16, 24))  # the first one stays
    assert grid.sizes == (8, 12) and grid.size.tolist() == [8, 12]


@pytest.mark.parametrize("l_max,sizes", [(16, (16, 16)), ((8, 32), (8, 32))])
def test_l_max_sets_the_reference(l_max, sizes):
    grid = ReferenceGrid(2, l_max=l_max).train()
    grid.observe((5, 5))
    assert grid.is_set and grid.sizes == sizes


def test_rates_are_reference_over_size():
    grid = ReferenceGrid(3, l_max=(8, 16, 6))
    assert grid.rates((4, 32, 6)) == pytest.approx((2.0, 0.5, 1.0))
    # spacing = rate / ref = 1 / S: the extent is fixed, only the number of samples changes
    assert grid.spacings((4, 32, 6)) == pytest.approx((1 / 4, 1 / 32, 1 / 6))


def test_explicit_rate_overrides():
    grid = ReferenceGrid(2, l_max=(8, 16))
    assert grid.rates((4, 4), rate=0.5) == (0.5, 0.5)
    assert grid.rates((4, 4), rate=(0.5, 3)) == (0.5, 3.0)
    assert grid.spacings((4, 4), rate=(0.5, 2.0)) == pytest.approx((0.5 / 8, 2.0 / 16))


@pytest.mark.parametrize(
    "rate,error",
    [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ((1.0, 0.0), ValueError),
        ((1.0, 2.0, 3.0), ValueError),
        ((1.0,), ValueError),
        ("fast", TypeError),
        (None, TypeError),
    ],
)
def test_bad_rates(rate, error):
    grid = ReferenceGrid(2, l_max=8)
    call = (lambda: check_rates(rate, 2)) if rate is None else (lambda: grid.rates((4, 4), rate=rate))
    with pytest.raises(error, match=re.escape(repr(rate))):
        call()


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: ReferenceGrid(4), ValueError, "ndim.*4"),
        (lambda: ReferenceGrid(0), ValueError, "ndim.*0"),
        (lambda: ReferenceGrid(2, l_max=0), ValueError, "l_max.*0"),
        (lambda: ReferenceGrid(2, l_max=(8,)), ValueError, r"l_max.*\(8,\)"),
        (lambda: ReferenceGrid(2, l_max="8"), TypeError, "l_max.*'8'"),
        (lambda: ReferenceGrid(2).set((4, -1)), ValueError, r"\(4, -1\)"),
        (lambda: ReferenceGrid(2, l_max=8).view(0), ValueError, "stride.*0"),
        (lambda: ReferenceGrid(2, l_max=8).view((2, 2, 2)), ValueError, r"stride.*\(2, 2, 2\)"),
    ],
)
def test_grid_argument_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


class Holder(nn.Module):
    """A model with one reference grid and a layer grid that is a view of it (stride 4)."""

    def __init__(self, l_max=None):
        super().__init__()
        self.grid = ReferenceGrid(2, l_max=l_max)
        self.view = self.grid.view(4)


def test_state_dict_round_trip_into_a_fresh_grid():
    trained = Holder()
    trained.grid.train().observe((28, 20))
    fresh = Holder()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.grid.sizes == (28, 20)
    assert fresh.grid.rates((14, 40)) == pytest.approx((2.0, 0.5))


def test_state_dict_round_trip_into_a_grid_built_on_meta():
    """Models are built on the meta device and then materialised; the loaded sizes must win."""
    trained = ReferenceGrid(2, l_max=(12, 6))
    fresh = ReferenceGrid(2, l_max=(3, 3), device="meta").to_empty(device="cpu")
    fresh.load_state_dict(trained.state_dict())
    assert fresh.sizes == (12, 6) and fresh.rates((6, 6)) == (2.0, 1.0)


@pytest.mark.parametrize("stride,expected", [(1, (14, 9)), (4, (3, 2)), ((2, 16), (7, 1)), (32, (1, 1))])
def test_view_divides_by_stride(stride, expected):
    grid = ReferenceGrid(2, l_max=(14, 9))
    view = grid.view(stride)
    assert isinstance(view, GridView) and view.sizes == expected
    assert view.rates((7, 1)) == pytest.approx((expected[0] / 7, expected[1] / 1))


def test_view_of_an_unset_grid_is_unset():
    grid = ReferenceGrid(2)
    view = grid.view(2)
    assert not view.is_set and view.sizes is None and view.rates((5, 6)) == (1.0, 1.0)
    view.observe((5, 6))  # a view never adopts a size of its own
    assert grid.sizes is None and view.sizes is None


def test_view_follows_its_parent():
    holder = Holder(l_max=(16, 16))
    assert holder.view.sizes == (4, 4)
    holder.grid.set((32, 8))
    assert holder.view.sizes == (8, 2)
    holder.load_state_dict({"grid.size": torch.tensor([64, 12])})
    assert holder.view.sizes == (16, 3)


def test_view_has_no_state_of_its_own():
    assert list(Holder(l_max=8).state_dict()) == ["grid.size"]


def test_deepcopy_keeps_the_view_attached_to_the_copied_grid():
    original = Holder(l_max=(16, 16))
    clone = copy.deepcopy(original)
    assert clone.view.parent is clone.grid
    clone.grid.set((40, 8))
    assert clone.view.sizes == (10, 2)
    assert original.grid.sizes == (16, 16) and original.view.sizes == (4, 4)


# -- time --------------------------------------------------------------------------------------

from s4vision.sampling import (  # noqa: E402
    ReferenceClock, check_timestamps, frame_positions, frame_rates, uniform_rate, uniform_timestamps,
)


def test_uniform_timestamps():
    np.testing.assert_allclose(uniform_timestamps(4, 8).numpy(), [0, 0.125, 0.25, 0.375])
    np.testing.assert_allclose(uniform_timestamps(3, 2, start=10).numpy(), [10, 10.5, 11])
    assert uniform_timestamps(3, 30).dtype == torch.float64
    with pytest.raises(ValueError, match="fps"):
        uniform_timestamps(3, 0)


def test_frame_positions_and_rates_against_hand_computed_steps():
    t = check_timestamps([[5.0, 5.125, 5.375, 5.5], [0.0, 0.25, 0.5, 0.75]])
    np.testing.assert_allclose(frame_positions(t, 8).numpy(), [[0, 1, 3, 4], [0, 2, 4, 6]])
    # the step before each frame in training frames (1/8 s); before the first: the one after it
    np.testing.assert_allclose(frame_rates(t, 8).numpy(), [[1, 1, 2, 1], [2, 2, 2, 2]])
    assert frame_rates(check_timestamps([3.0]), 8).tolist() == [1.0]  # one frame: one reference step
    assert uniform_rate(frame_rates(t[1], 8)) == 2.0
    assert uniform_rate(frame_rates(t[0], 8)) is None
    assert uniform_rate(torch.tensor([1.0, 1.00001, 0.99999], dtype=torch.float64)) == pytest.approx(1.0)


@pytest.mark.parametrize("bad, match", [
    ([0.0, 0.1, 0.1, 0.2], r"strictly increasing, got 0.1 then 0.1 at index \(2,\)"),
    ([0.0, 0.2, 0.1], "strictly increasing"),
    ([0.0, float("nan"), 0.2], r"finite, got nan at index \(1,\)"),
    ([0.0, float("inf")], "finite"),
    ([[0.0, 0.1], [0.0, -0.1]], r"at index \(1, 1\)"),
    ([], "T >= 1"),
])
def test_bad_timestamps_give_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        check_timestamps(torch.tensor(bad, dtype=torch.float64))


def test_timestamps_length_and_type():
    with pytest.raises(ValueError, match="got 3 timestamps for 4 frames"):
        check_timestamps([0.0, 0.1, 0.2], num_frames=4)
    with pytest.raises(TypeError):
        check_timestamps("0 0.1")
    with pytest.raises(TypeError):
        check_timestamps(torch.tensor([0.0, 1.0], dtype=torch.complex64))
    assert check_timestamps([0, 1, 2]).dtype == torch.float64


def test_reference_clock():
    clock = ReferenceClock()
    assert not clock.is_set and clock.train_fps is None and clock.rate(30) == 1.0
    clock.eval()
    clock.observe(30)
    assert not clock.is_set  # only training sets it
    clock.train()
    clock.observe(30)
    clock.observe(60)
    assert clock.train_fps == 30 and clock.rate(60) == 0.5 and float(clock.fps) == 30
    restored = ReferenceClock()
    restored.load_state_dict(clock.state_dict())
    assert restored.train_fps == 30
    unset = ReferenceClock().train()
    assert unset.reference_fps(uniform_timestamps(5, 25)) == pytest.approx(25) and unset.train_fps == pytest.approx(25)
    with pytest.raises(ValueError, match="fps"):
        ReferenceClock(fps=-1)


def test_fixed_rates_reach_every_view():
    grid = ReferenceGrid(3, (8, 16, 16))
    view = grid.view((2, 4, 4)).view((1, 2, 2))
    assert grid.rates((16, 16, 16)) == (0.5, 1.0, 1.0)
    with grid.fixed_rates({0: 2.0}):
        assert grid.rates((16, 16, 16)) == (2.0, 1.0, 1.0)
        assert view.rates((8, 2, 2)) == (2.0, 1.0, 1.0)
        assert grid.rates((16, 16, 16), rate=1.5) == (1.5, 1.5, 1.5)  # an explicit rate still wins
    assert view.rates((8, 2, 2)) == (0.5, 1.0, 1.0)
    with pytest.raises(ValueError, match="axis"):
        with grid.fixed_rates({3: 1.0}):
            pass
