# The two commands: `make run` (gateway with embedded defaults) and `make test` (all tests).
# Both do the whole set-up first (scripts/bootstrap.sh): Mosquitto, virtualenv, dependencies.
PY := .venv/bin/python

.PHONY: setup run test lint proto proto-check bench bench-smoke clean

setup:
	@bash scripts/bootstrap.sh

run: setup
	$(PY) -m gateway run

test: setup
	$(PY) scripts/gen_proto.py --check
	$(PY) -m ruff check gateway tests scripts $(wildcard load)
	$(PY) scripts/typecheck.py  # mypy --strict on gateway, tests and load
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check gateway tests scripts $(wildcard load)
	$(PY) scripts/typecheck.py  # mypy --strict on gateway, tests and load

proto: setup
	$(PY) scripts/gen_proto.py

bench: setup
	$(PY) -m load.bench

bench-smoke: setup
	$(PY) -m load.bench --smoke --out load/results/smoke

clean:
	rm -rf .venv data .mypy_cache .ruff_cache .pytest_cache
