# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
VENV_FLAGS ?=
STAMP := $(VENV)/.xmodal-installed

.PHONY: demo test lint format bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): pyproject.toml scripts/install.sh | $(VENV)/bin/python
	bash scripts/install.sh $(VENV)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/xmodal demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -rs

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/encode_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
