# Set-up and everyday commands. The first target that needs the environment creates it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The tested CPU build of torch. Elsewhere, point TORCH_INDEX at the CPU wheel index
# (https://download.pytorch.org/whl/cpu) to avoid the multi-GB CUDA build, or leave the
# torch you already have: pyproject only asks for torch>=2.4.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# The extras the test suite exercises: Box2D, pixel families, Ray, Optuna, rliable run in CI.
EXTRAS ?= dev,box2d,minatar,atari,ray,tune,stats

.PHONY: venv test lint format train clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

train: venv
	$(PY) scripts/train.py --env-id CartPole-v1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
