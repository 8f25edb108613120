# make demo: set up .venv and run the main job on the bundled data
# make test: set up .venv and run the whole test suite (two pytest-xdist workers, a test file per worker)
# make gpu-check: on a CUDA machine, the GPU-only tests and GPU benchmarks into build/gpu-check/ (or $OUT);
#                 GPU_CHECK_BUNDLE=DIR installs from an offline bundle (scripts/gpu-bundle.sh) on an air-gapped
#                 one; without a GPU, one line and a dry run of every step
VENV ?= .venv
PY := $(VENV)/bin/python
AF := $(VENV)/bin/augforge
STAMP := $(VENV)/.augforge-installed
DEMO := build/demo

.PHONY: setup demo test gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: $(STAMP)
	$(AF) ingest digits $(DEMO)/digits-lt --imbalance longtail --test-split 0.25 --overwrite
	$(AF) report $(DEMO)/digits-lt --strategy over --html $(DEMO)/report.html
	$(AF) report $(DEMO)/digits-lt --split test
	$(AF) balance $(DEMO)/digits-lt $(DEMO)/digits-bal --strategy over --overwrite
	$(AF) preview examples/digits.yaml --out $(DEMO)/preview.png
	$(AF) build examples/digits.yaml --out $(DEMO)/digits-aug --overwrite
	$(AF) report $(DEMO)/digits-aug
	$(AF) preview examples/text.yaml --n 3
	$(AF) build examples/text.yaml --out $(DEMO)/tickets-aug --overwrite
	$(AF) train examples/digits.yaml --data $(DEMO)/digits-aug --run-dir $(DEMO)/run --resume
	$(AF) evaluate $(DEMO)/run/model.pt $(DEMO)/digits-aug --split test
	$(AF) quantize $(DEMO)/run --data $(DEMO)/digits-aug
	$(PY) examples/make_glosses.py
	$(AF) train examples/glosses.yaml --run-dir $(DEMO)/glosses-run --resume
	$(AF) evaluate $(DEMO)/glosses-run/model.pt build/glosses-data --split test

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

gpu-check:  # sets up .venv only where it needs it: a GPU machine reuses its own torch (and GPU_CHECK_BUNDLE)
	bash scripts/gpu-check.sh

clean:
	rm -rf build .pytest_cache
