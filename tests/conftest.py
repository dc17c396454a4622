import os

import pytest
import torch

import _helpers  # noqa: F401  (shared test helpers; registers the tiny test model with timm)

# Two cores are shared by the test workers; keep each worker single-threaded.
torch.set_num_threads(int(os.environ.get("S4VISION_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
