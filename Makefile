# Two commands on a fresh machine: `make demo` (the main job end to end) and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: demo test bench scale lint
demo: $(STAMP)
	$(VENV)/bin/juki demo

# two workers (pytest-xdist): the suite is mostly single-threaded Python; on a 2-core machine
# 10.7 -> 6.7 min
test: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q -m benchmark -p no:cacheprovider --benchmark-columns=min,mean,max,rounds

scale: $(STAMP)
	$(PY) -m benchmarks.scale --residents 1_000_000

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check engine loaders && $(VENV)/bin/mypy engine loaders
