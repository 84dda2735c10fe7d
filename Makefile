# tomoflow: two commands on a fresh machine.
#   make demo   set up .venv and run the main job on a simulated scan (local Dask cluster)
#   make test   set up .venv and run the test suite (everything: what CI runs)
#   make test-fast  the same without the tests marked slow: the local loop (a few minutes)
#   make bench  set up .venv-bench (adds benchmark peers such as astra-toolbox) and run benchmarks
#   make lint   ruff (lint and format check) and mypy, as configured in pyproject.toml
#
# torch: where no NVIDIA GPU is visible the CPU build is installed first (TORCH_SPEC, from the
# local wheel cache or TORCH_INDEX, e.g. TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"),
# so the package's `torch` requirement is already met and no CUDA wheels are pulled. With a GPU,
# pip resolves the regular CUDA build and the `gpu` extra (CuPy, dask-cuda).

PYTHON ?= python3
VENV ?= .venv
BENCH_VENV ?= .venv-bench
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_FLAGS ?= -q
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
comma := ,
EXTRAS := test,hpc,onnx$(if $(HAS_GPU),$(comma)gpu,)

STAMP := $(VENV)/.tomoflow-installed
LINT_STAMP := $(VENV)/.tomoflow-lint-installed
BENCH_STAMP := $(BENCH_VENV)/.tomoflow-installed

.PHONY: demo test test-fast bench venv clean schemas help browser lint

help:
	@echo "make demo | make test | make test-fast | make lint | make docs | make bench | make schemas | make clean"

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(if $(HAS_GPU),,$(VENV)/bin/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)" $(TORCH_INDEX))
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tomoflow demo

# The dashboard browser test needs Debian's headless Chromium: installed best effort (as root with
# apt-get; never fails; NO_BROWSER=1 to leave the system alone: the test is then skipped with a reason).
test: $(STAMP)
	$(if $(NO_BROWSER),,-@scripts/install-browser)
	$(if $(NO_SLURM),,-@scripts/start-slurm)
	$(VENV)/bin/python -m pytest

# The local loop: every test but those marked `slow` (under 5 minutes on 2 cores; no browser or SLURM
# set up, so their tests skip with the reason). `make test` still runs everything.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow"

browser:
	-scripts/install-browser

# The `lint` extra (ruff, mypy, stubs; pinned ranges) into .venv, once; mypy reads the installed packages.
$(LINT_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[lint]"
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(VENV)/bin/tomoflow schema --out schemas

# The documentation site (docs/, Sphinx + MyST + numpydoc): the `docs` extra is installed into .venv
# when missing; warnings are errors. Open docs/_build/html/index.html. tests/test_docs.py runs its examples.
DOCS_STAMP := $(VENV)/.tomoflow-docs-installed
.PHONY: docs

$(DOCS_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[$(EXTRAS),docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

$(BENCH_STAMP): pyproject.toml constraints.txt Makefile benchmarks/requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(if $(HAS_GPU),,$(BENCH_VENV)/bin/python -m pip install $(PIP_FLAGS) "$(TORCH_SPEC)" $(TORCH_INDEX))
	$(BENCH_VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e . -r benchmarks/requirements-bench.txt
	touch $(BENCH_STAMP)

# Every benchmark at full size (about 2.5 hours on 2 cores; run on an idle machine). Results in
# benchmarks/results/, figures in benchmarks/BENCHMARKS.md; `--quick` on any script for a smoke run.
bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/bench_recon.py
	$(BENCH_VENV)/bin/python benchmarks/bench_pipeline.py
	$(BENCH_VENV)/bin/python benchmarks/bench_align.py
	$(BENCH_VENV)/bin/python benchmarks/bench_recover.py
	$(BENCH_VENV)/bin/python benchmarks/bench_recover.py --parts c --lfov-spacing 3 \
		--output benchmarks/results/bench_recover_c_3um.json  # the paper's case: LFOV 3 um
	$(BENCH_VENV)/bin/python benchmarks/bench_scale.py --baseline-max 0  # whole samples: HR 192, 384, 768
	$(BENCH_VENV)/bin/python benchmarks/bench_batch.py
	$(BENCH_VENV)/bin/python benchmarks/bench_safety.py
	@if command -v nvidia-smi >/dev/null 2>&1; then $(BENCH_VENV)/bin/python benchmarks/bench_gpu.py && \
	$(BENCH_VENV)/bin/python benchmarks/bench_gpu_align.py && $(BENCH_VENV)/bin/python benchmarks/bench_gpu_recover.py; \
	else echo "bench_gpu*.py: skipped (no NVIDIA GPU; see benchmarks/README.md)"; fi

clean:
	rm -rf $(VENV) $(BENCH_VENV) demo-output .pytest_cache
