import os

import pytest
import torch

import _helpers  # noqa: F401  (shared test helpers; registers the tiny test model with timm)

# Two cores are shared by the test workers; keep each worker single-threaded.
torch.set_num_threads(int(os.environ.get("S4VISION_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Device-aware tests (marked ``device``) run on the device named by S4VISION_TEST_DEVICE (default
# cpu), as timm's own tests take TORCH_DEVICE: ``S4VISION_TEST_DEVICE=cuda pytest -m device``
# runs the same subset on a GPU (tools/gpu_check.py does).
TEST_DEVICE = os.environ.get("S4VISION_TEST_DEVICE", "cpu")
if TEST_DEVICE.startswith("cuda"):
    # The device tests check float32 results against float64 references; on Ampere and later
    # cuDNN's convolutions default to TF32 (a 10-bit mantissa), which those references would flag.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def pytest_configure(config):
    config.addinivalue_line("markers", "device: runs on the device named by S4VISION_TEST_DEVICE (default cpu)")


@pytest.fixture
def device() -> torch.device:
    """The device of the device-aware tests; skips when it is not available here."""
    dev = torch.device(TEST_DEVICE)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"S4VISION_TEST_DEVICE={TEST_DEVICE} but CUDA is not available")
    return dev
