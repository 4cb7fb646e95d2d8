# make setup: .venv with resnetlab and its dev tools; make test: lint + tests (one worker per core);
# make train [ARGS="--epochs 3"]: the main job, ARGS passed on to resnetlab train.
# make docs: the documentation site into site/ (mkdocs build --strict; installs .[docs]);
# make results: README's generated headline figures refreshed, pages with generated tables into build/docs/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint train docs results clean

$(BIN)/resnetlab: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/resnetlab

lint: setup
	$(BIN)/ruff check src tests benchmarks

# OpenVINO's tests run in a pytest process of their own: a later torch.compile in a process that has
# run OpenVINO's conversion and NNCF crashed with a segmentation fault.
test: lint
	$(BIN)/python -m pytest -q -n auto --durations=10 --ignore=tests/test_openvino.py
	$(BIN)/python -m pytest -q -n auto tests/test_openvino.py

train: setup
	bash scripts/quickstart.sh $(ARGS)

$(BIN)/mkdocs: pyproject.toml | $(BIN)/resnetlab
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

results: setup
	$(BIN)/python scripts/docs_gen.py

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache .ruff_cache
