# Everything runs from a local virtual environment built exactly from the hashed lock file.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYVER := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
LOCK := requirements-py$(PYVER).lock
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-$(PYVER)
ARGS ?=

.PHONY: setup train test test-fast bench lint format clean

# --compile-bytecode writes every package's .pyc at install time: where PYTHONDONTWRITEBYTECODE
# is set (CI containers), each Python process would otherwise recompile jax, flax, gymnax… from
# source, ≈11 s per process on 2 cores.
$(STAMP): $(LOCK) pyproject.toml
	@test -f $(LOCK) || { echo "stoix: error: no lock for Python $(PYVER); use Python 3.11 or 3.12"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --quiet --python $(PY) --require-hashes --compile-bytecode $(LOCK)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv from the lock file (only when the lock changed)

train: setup  ## train the default system: PPO on gymnax CartPole
	$(PY) stoix/systems/ppo/anakin/ff_ppo.py $(ARGS)

# worksteal: an idle worker takes queued tests from the busy one, so long tests at the end of the
# collection order do not leave one core idle.
test: setup  ## the default test suite (CI runs this), on two forced CPU devices
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=10 $(ARGS)

bench: setup  ## slow learning checks and the throughput table
	$(PY) -m pytest -q -m slow $(ARGS)
	$(PY) bench/throughput.py
	$(PY) bench/q_learning.py
	$(PY) bench/continuous.py
	$(PY) bench/sebulba.py

lint: setup
	$(VENV)/bin/ruff check stoix tests bench
	$(VENV)/bin/ruff format --check stoix tests bench

format: setup
	$(VENV)/bin/ruff format stoix tests bench
	$(VENV)/bin/ruff check --fix stoix tests bench

clean:
	rm -rf $(VENV) results .pytest_cache
