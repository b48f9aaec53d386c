# Quick start: `make demo` runs the job on the embedded real sample; `make test` runs the tests.
# Both create the virtualenv .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.suelo-installed

.PHONY: install demo test test-all lint typecheck bench clean

install: $(STAMP)

# torch==2.13.0 first: on machines that carry that CPU wheel locally it avoids pulling a multi-GB CUDA build;
# elsewhere pip falls back to the range in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet torch==2.13.0 || echo "torch==2.13.0 not available: using the pyproject range"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/suelo run workflows/demo.yaml

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ''

lint: install
	$(BIN)/ruff check pipeline models data tests benchmarks workflows
	$(BIN)/ruff format --check pipeline models data tests benchmarks

# mypy over the installed package `suelo` (strict on the core stages: pyproject [tool.mypy]). mypy cannot follow the
# package-dir mapping of the editable install, so the script checks a throwaway symlink tree and reports real paths.
typecheck: install
	$(BIN)/python .ci/typecheck.py

bench: install
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf out .pytest_cache
