# make setup: .venv with resnetlab and its dev tools; make test: lint + tests (one worker per core);
# make train [ARGS="--epochs 3"]: the main job, ARGS passed on to resnetlab train.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint train clean

$(BIN)/resnetlab: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/resnetlab

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -n auto --durations=10

train: setup
	bash scripts/quickstart.sh $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
