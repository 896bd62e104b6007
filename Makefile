# The README's two commands. Both create .venv when missing and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned to the CPU build that lies on local disk; nothing may pull a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]' torch==2.13.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-$$( [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || echo offscreen)} \
		$(BIN)/brainstream demo

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -x -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check brainstream realtime models calibration tests setup.py scripts

clean:
	rm -rf $(VENV) build *.egg-info
