# All targets create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is installed from the registry as a normal user would; the CUDA build runs fine on CPU
# and brings Triton, whose interpreter the scan tests use.
TORCH_SPEC ?= torch torchvision

.PHONY: venv demo test bench gpu-check gpu-wheelhouse clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[video,decord,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m s4vision.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout=1800 tests

bench: $(STAMP)
	$(PY) tools/bench_kernels.py

# On a machine with one CUDA GPU: the device-aware tests, compiled Triton, bf16 training of every
# model family, inductor, a torchrun/NCCL step and the GPU benchmarks, in under 8 minutes; writes
# gpu_check/gpu_check.json and gpu_check/gpu_check.md. Without a GPU: a dry run on the CPU.
# On a GPU image whose Python already has a CUDA torch (no registry needed): make gpu-check PY=python3
# Without a registry there, first `make gpu-wheelhouse` here (the packages such images lack, into
# gpu_wheelhouse/), carry that folder over, and run: make gpu-check PY=python3 WHEELHOUSE=gpu_wheelhouse
WHEELHOUSE ?=
gpu-check:
	@if [ "$(PY)" = "$(VENV)/bin/python" ]; then $(MAKE) --no-print-directory venv; fi
	$(PY) tools/gpu_check.py --out-dir gpu_check $(if $(WHEELHOUSE),--wheelhouse $(WHEELHOUSE))

gpu-wheelhouse: $(STAMP)
	$(PY) tools/gpu_check.py --download-wheelhouse gpu_wheelhouse

clean:
	rm -rf $(VENV) build dist *.egg-info
