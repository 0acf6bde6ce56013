# trcgl: `make reproduce` regenerates every chapter and builds the book; `make test` runs the tests.
# Needs only Python 3.11 and make: the first call creates .venv with uv (installed on demand).

PROFILE ?= cpu
DEVICE  ?= auto
PARAMS  ?=
PYTEST_ARGS ?=
# A launcher for the stage computation (the trainers then run on N processes through HF Accelerate),
# e.g. LAUNCH="accelerate launch --multi_gpu --num_processes 2": two GPUs, or two gloo processes on a
# machine without one (Accelerate's --cpu starts several processes only through MPI). Empty: one process.
LAUNCH  ?=

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export TRCGL_RUN_DIR := $(CURDIR)/runs
export PYTHONHASHSEED := 0

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
EXECUTED  := $(NOTEBOOKS:.py=.ipynb)
PACKAGE   := $(shell find trcgl -name '*.py' -o -name '*.yaml' -o -name '*.json' 2>/dev/null)
STAMP     := _build/.params

.PHONY: help install browser lint test reproduce stages sweep estimate gpu-check notebooks book check-site publish clean clean-cache distclean FORCE

help:
	@echo "make reproduce [PROFILE=smoke|cpu|gpu|paper] [DEVICE=auto|cpu|cuda] [PARAMS='-p NAME VALUE ...'] [LAUNCH='accelerate launch ...']"
	@echo "                                                                  compute every stage, execute all chapters, build the book"
	@echo "make stages                                                       compute every stage the chapters show (python -m trcgl run all)"
	@echo "make estimate [PROFILE=gpu] [REFERENCE=h100]                      the estimated time of each stage (a cost model, not a measurement)"
	@echo "make -j N sweep TABLE=table1                                      a table's (row, seed) runs as N parallel processes, then the table"
	@echo "make gpu-check                                                    on a GPU machine: CUDA tests and the smoke book on CUDA (tools/gpu_check.sh)"
	@echo "make test                                                         run the test suite"
	@echo "make check-site                                                   open every built page in headless Chromium"
	@echo "make publish [REMOTE=origin] [FORCE=1]                            push the built book to the gh-pages branch"
	@echo "make lint | environment.yml                                       ruff check | regenerate the conda mirror of uv.lock"
	@echo "make install | notebooks | book | clean | clean-cache | distclean"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

# The browser check needs Chromium: installed from Debian's package where we can (root + apt), else skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) ; } || \
	  echo "Chromium not installed: the browser check will be skipped"

lint: install
	$(PY) -m ruff check trcgl tests tools

test: install browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The conda mirror: every locked runtime package, pinned (tests/test_environment.py checks it).
environment.yml: uv.lock tools/environment_yml.py | $(UV)
	$(PY) tools/environment_yml.py $(UV)

# The executed notebooks depend on the profile, device and parameters: this stamp changes only when they do.
$(STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo "$(PROFILE) $(DEVICE) $(PARAMS)" | cmp -s - $@ || echo "$(PROFILE) $(DEVICE) $(PARAMS)" > $@

# Every expensive step is a stage of trcgl/stages/, computed here, outside the notebooks (the
# cache's per-key locks keep parallel runs safe); the chapters then load their results.
STAGES := runs/.stages-done
# Under LAUNCH the launcher runs `-m trcgl` in every process (the venv's bin first on PATH, so that
# `accelerate` and `torchrun` are the locked ones); the chapters below only load what it computed.
TRCGL_STAGES := $(if $(strip $(LAUNCH)),PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(LAUNCH) -m trcgl,$(PY) -m trcgl)

RUN_ARGS = --profile $(PROFILE) --device $(DEVICE) $(PARAMS)
# Processes that compute stages side by side on this machine (python -m trcgl run --workers): two on
# the CPU profiles (the many small stages use two cores better as two processes), one on a GPU and
# under LAUNCH (the launcher's processes train together instead). The chapters execute as many at once.
WORKERS ?= $(if $(strip $(LAUNCH)),1,$(if $(filter smoke cpu,$(PROFILE)),2,1))
# Long profiles print the estimated time of each stage first (ESTIMATE= turns it off).
ESTIMATE ?= $(filter gpu paper,$(PROFILE))

$(STAGES): $(STAMP) $(PACKAGE) $(VENV)/.installed
	$(if $(ESTIMATE),$(PY) -m trcgl run all $(RUN_ARGS) --estimate)
	$(TRCGL_STAGES) run all $(RUN_ARGS) $(if $(strip $(LAUNCH)),,--workers $(WORKERS))
	@touch $@

stages: $(STAGES)

# The estimated time of `run all` (measured on this machine's device; REFERENCE=h100: configs/devices.yaml).
REFERENCE ?=
estimate: install
	$(PY) -m trcgl run all $(RUN_ARGS) --estimate $(if $(REFERENCE),--reference $(REFERENCE))

# A table's runs as separate make targets: `make -j 4 sweep TABLE=table1` computes the runs' shared
# inputs, then up to 4 (row, seed) runs at once (the cache's per-key locks keep them apart), then
# assembles the table into the results store from the cached runs.
TABLE ?= table1
SWEEP := runs/sweep-$(PROFILE)-$(TABLE).mk

$(SWEEP): $(STAMP) $(PACKAGE) $(VENV)/.installed
	@mkdir -p $(dir $@)
	$(PY) -m trcgl run $(TABLE) $(RUN_ARGS) --list --format make > $@.tmp
	@mv $@.tmp $@

sweep: $(SWEEP)
	$(PY) -m trcgl run $(TABLE) $(RUN_ARGS) --inputs-only
	$(MAKE) --no-print-directory -f $(SWEEP) TRCGL="$(PY) -m trcgl" runs
	$(PY) -m trcgl run $(TABLE) $(RUN_ARGS)

# On a machine with a GPU: the CUDA tests, then the smoke book on CUDA (under 10 minutes).
gpu-check:
	bash tools/gpu_check.sh

notebooks/%.ipynb: notebooks/%.py $(STAMP) $(PACKAGE) $(VENV)/.installed $(STAGES)
	$(PY) -m trcgl execute $< --profile $(PROFILE) --device $(DEVICE) $(PARAMS)

notebooks: $(EXECUTED)

BOOK_SOURCES := $(wildcard book/*.md book/*.bib) _config.yml _toc.yml
HTML := _build/html/index.html
# `python -m trcgl build-book` writes this stamp after every build that succeeded. The targets below
# follow it, not the pages: Sphinx leaves a page whose source did not change (index.html) as it was,
# so after a build in another profile the pages' times cannot tell the new book from the old one (the
# browser check would pass the new book by the stamp of the old). No index.html: built again.
BUILT := _build/.book-built

$(BUILT): $(EXECUTED) $(BOOK_SOURCES) $(if $(wildcard $(HTML)),,FORCE)
	$(PY) -m trcgl build-book

book: install $(BUILT)

_build/.site-checked: $(BUILT)
	$(PY) -m trcgl check-site --if-chromium
	@touch $@

check-site: browser _build/.site-checked

# Publish the built book to the gh-pages branch of REMOTE with ghp-import. Refuses a book built
# from stale chapters, older than its chapters, or executed in the smoke profile (FORCE=1 overrides).
REMOTE ?= origin
publish: install
	$(PY) -m trcgl publish --remote $(REMOTE) $(if $(FORCE),--force)

reproduce: install
	$(MAKE) --no-print-directory stages
	OMP_WAIT_POLICY=PASSIVE $(MAKE) --no-print-directory -j $(WORKERS) notebooks
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory check-site

clean:
	rm -rf _build notebooks/*.ipynb

clean-cache:
	rm -rf runs

distclean: clean clean-cache
	rm -rf $(VENV) .tools

FORCE:
