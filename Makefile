# Quick start: `make demo` (main job on an embedded default) and `make test` (whole suite and the docstring
# examples of idm_imaging: pytest's testpaths and --doctest-modules in pyproject.toml).
# Each target sets itself up (virtual environment, installs) and is idempotent.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# System packages napari's Qt needs under Xvfb (Debian names).
APT_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxcb-image0 \
            libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 \
            libdbus-1-3 libglib2.0-0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The datasets folder (layout: idm_imaging/datasets.py) for the tests on real data, which skip without it.
export IDM_IMAGING_DATA ?= $(abspath $(CURDIR)/../shared/datasets)

DVENV  := .venv-deepinv
DPY    := $(DVENV)/bin/python
DSTAMP := $(DVENV)/.installed

.PHONY: demo test test-fast test-deepinv sysdeps install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

sysdeps:
	@command -v xvfb-run >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PKGS); }

demo: $(STAMP)
	$(VENV)/bin/idm-imaging demo --out demo_output

test: $(STAMP) sysdeps
	OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest -q

# Everything but the tests marked slow (for quick local iterations).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The deepinv extra in its own environment: deepinv needs torchvision, whose wheel from the package index does not
# import beside the CPU torch 2.13 of .venv; torch 2.14.1 + torchvision 0.29.1 are a matching pair (a CUDA build,
# about 5.5 GB, that runs on the CPU). Creating it takes about 6 minutes on 2 shared cores.
$(DSTAMP): pyproject.toml
	$(PYTHON) -m venv $(DVENV)
	$(DPY) -m pip install -q --upgrade pip
	$(DPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(DPY) -m pip install -q -e ".[deepinv]" pytest pytest-timeout nbclient nbformat ipykernel matplotlib
	touch $(DSTAMP)

# deepinv interop tests and notebook 05 (skipped by `make test`, whose environment has no deepinv).
test-deepinv: $(DSTAMP)
	OMP_NUM_THREADS=2 $(DPY) -m pytest -q tests/test_deepinv.py tests/test_notebooks.py -k "deepinv"

clean:
	rm -rf $(VENV) $(DVENV) demo_output .pytest_cache
