# paradev: `make test` sets everything up on a fresh clone (only Python >= 3.11 and git needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test soak lint bench clean ci-status ci-conflicts ci-merge

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# pip >= 25.2 writes console scripts that do not import re: ~10 ms off every paradev command
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25.2'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with paradev and its test tools

demo: $(STAMP) ## the whole flow on a generated sample project, with scripted agents (./demo-run)
	$(BIN)/python -m paradev.demo

test: $(STAMP) ## run the whole test suite but the slow crash soak (make soak)
	$(BIN)/python -m pytest -n auto -q -m "not slow"

soak: $(STAMP) ## the crash soak, bounded: SIGKILL the merge train at 30+ moments (10+ in a rebase), resume as told
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) ## benchmarks: paradev next to raw git doing the same work
	$(BIN)/python bench/check.py
	$(BIN)/python bench/status.py
	$(BIN)/python bench/conflicts.py
	$(BIN)/python bench/merge.py
	$(BIN)/python bench/merge_queue.py
	$(BIN)/python bench/run.py --parallel 4
	$(BIN)/python bench/shared_state.py
	$(BIN)/python bench/report.py
	$(BIN)/python bench/fuzz.py
	$(BIN)/python bench/soak.py

# CI-facing targets: run paradev on the repository REPO (default: this one).
REPO     ?= .
PARADEV  := $(abspath $(BIN))/paradev

ci-status: $(STAMP) ## every agent's branch, tasks, ahead/behind (JSON) for REPO
	cd $(REPO) && $(PARADEV) status --json

ci-conflicts: $(STAMP) ## fail (exit 1) when two agent branches, or one and base, really conflict in REPO
	cd $(REPO) && $(PARADEV) conflicts --check

ci-merge: $(STAMP) ## run the merge train in REPO (exit 1 when it stops on a conflict or a failing gate)
	cd $(REPO) && $(PARADEV) merge

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
