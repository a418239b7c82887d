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

BUILD_INPUTS := pyproject.toml setup.py reactor/__init__.py \
	ws/csrc/*.c ws/csrc/*.h ws/csrc/*.py http/csrc/*.c http/csrc/*.h http/csrc/*.py \
	reactor/csrc/*.c reactor/csrc/*.h reactor/csrc/*.py

# Reinstall when the build inputs change (the cffi C sources are compiled by pip).
# .runtime: what running needs; .installed: that plus the test tools (the test extra).
$(VENV)/.runtime: $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
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

# Every in-place build product (the editable install compiles the cffi modules next to
# their packages) and the install stamps, so the next `make install` rebuilds them.
clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find reactor ws http -name '*.so' -delete
	rm -f $(VENV)/.installed $(VENV)/.runtime
