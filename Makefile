# Quick start: `make demo` (main job on an embedded default) and `make test` (whole suite).
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

.PHONY: demo test test-fast sysdeps install clean

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

clean:
	rm -rf $(VENV) demo_output .pytest_cache
