# paradev: `make test` sets everything up on a fresh clone (only Python >= 3.11 and git needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with paradev and its test tools

demo: $(STAMP) ## the whole flow on a generated sample project, with scripted agents (./demo-run)
	$(BIN)/python -m paradev.demo

test: $(STAMP) ## run the whole test suite
	$(BIN)/python -m pytest -n auto -q

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) ## benchmarks: paradev next to raw git doing the same work
	$(BIN)/python bench/status.py
	$(BIN)/python bench/conflicts.py
	$(BIN)/python bench/merge.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
