# Everything runs from a local virtualenv (.venv) that `make install` creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 9501
PROTO ?= auto
N ?= 10000
WORKERS ?= auto
FUZZ_SECONDS ?= 60

.PHONY: install run test lint format bench bench-echo bench-ws bench-http c1000k fuzz clean

install: $(VENV)/.installed

# Reinstall when the build inputs change (the cffi C sources are compiled by pip).
$(VENV)/.installed: pyproject.toml setup.py ws/csrc/*.c ws/csrc/*.h ws/csrc/*.py http/csrc/*.c http/csrc/*.h http/csrc/*.py reactor/csrc/*.c reactor/csrc/*.h reactor/csrc/*.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: install
	$(BIN)/python -m reactor --port $(PORT) --proto $(PROTO)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-echo bench-ws bench-http

bench-echo: install
	$(BIN)/python bench/echo.py

bench-ws: install
	$(BIN)/python bench/ws.py

bench-http: install
	$(BIN)/python bench/http_static.py

c1000k: install
	$(BIN)/python bench/c1000k.py --connections $(N) --workers $(WORKERS)

fuzz: install
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name '*.so' -path './ws/*' -delete
