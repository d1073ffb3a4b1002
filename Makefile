# Two entry points: `make demo` and `make test` (`make test-fast` leaves out the slow end-to-end runs). Both create .venv
# and install clipfit when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch 2.14.1 / torchvision 0.29.1 are the tested pair (a CUDA build that also runs on CPU).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# A CPU-only torch (about 1 GB instead of 6): make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test test-fast setup lint docs compare paper shapes-model clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Train the shapes-world demo, then write its figure report (the last line printed is the report's path).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m clipfit.demo --out runs/demo
	HF_HUB_OFFLINE=1 $(BIN)/python -m analysis.cli report runs/demo/shapes/base2new/clipfit/shots16/seed1 --out reports/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The quick tier while iterating: everything but the end-to-end runs marked slow (`make test` runs those too).
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerate docs/datasets.md from the dataset records (tests/unit/test_docs.py fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -m clipfit.data.docs docs/datasets.md

# The recipe comparison of README "Results": every recipe, base-to-new on the shapes world, 16 shots,
# seeds 1-3 in fp32 (about 1.5 hours on 2 cores), then the aggregated table and figures written into README.md.
COMPARE_RECIPES := clipfit clipfit-text clipfit-image clipfit-fc bitfit ln-tuning full coop cocoop kgcoop maple \
	clip-adapter linear-probe
compare: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/clipfit-train --dataset shapes --setting base2new --shots 16 --seeds 1 2 3 \
		--recipes $(COMPARE_RECIPES) --precision fp32 --out runs/compare -q
	HF_HUB_OFFLINE=1 $(BIN)/clipfit-analyze results runs/compare --out reports/compare --published --readme README.md \
		--readme-figures docs/figures

# The paper's base-to-new table: ClipFit on the 11 benchmarks x seeds 1-3 with CLIP ViT-B/16 (OpenAI weights),
# then the tables against the published numbers (with each dataset's zero-shot self-check) and a report.
# Refuses to start, listing what is missing, unless every dataset and the weights are there (clipfit-data check).
#   make paper DATA_ROOT=~/data [OUT=runs/paper] [TRAIN_FLAGS="--device cuda"]
OUT ?= runs/paper
paper: $(STAMP)
	@test -n "$(DATA_ROOT)" || { echo "usage: make paper DATA_ROOT=/path/to/data [OUT=runs/paper] [TRAIN_FLAGS=...]" >&2; exit 2; }
	$(BIN)/clipfit-data check --data-root $(DATA_ROOT)
	$(BIN)/clipfit-train --datasets all --data-root $(DATA_ROOT) --setting base2new --seeds 1 2 3 --preset paper \
		--recipe clipfit --out $(OUT) -q $(TRAIN_FLAGS)
	$(BIN)/clipfit-analyze results $(OUT) --published --out $(OUT)/tables
	$(BIN)/clipfit-analyze report $(OUT)/*/base2new/clipfit/shots16/seed1 --published --out $(OUT)/report

# Regenerate the shapes-world model shipped in clipfit/assets (deterministic for a seed; 11-15 min on 2 cores).
shapes-model: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m clipfit.pretrain_shapes --seed 0 --out clipfit/assets/shapes-vit-tiny.safetensors

clean:
	rm -rf runs reports .pytest_cache
