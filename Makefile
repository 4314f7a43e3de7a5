# The two commands: `make run` (gateway with embedded defaults) and `make test` (all tests).
# Both do their set-up first (scripts/bootstrap.sh): Mosquitto, virtualenv, dependencies.
# `make run` installs only what running needs (setup-run); everything else adds the dev
# extras (setup: test, lint, codegen and benchmark tools).
PY := .venv/bin/python

.PHONY: setup setup-run run test lint proto proto-check bench bench-smoke clean

setup:
	@bash scripts/bootstrap.sh dev

setup-run:
	@bash scripts/bootstrap.sh run

run: setup-run
	$(PY) -m gateway run

test: setup
	$(PY) scripts/gen_proto.py --check
	$(PY) -m ruff check gateway tests scripts $(wildcard load)
	$(PY) scripts/typecheck.py  # mypy --strict on gateway, tests, load and scripts
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check gateway tests scripts $(wildcard load)
	$(PY) scripts/typecheck.py  # mypy --strict on gateway, tests, load and scripts

proto: setup
	$(PY) scripts/gen_proto.py

bench: setup
	$(PY) -m load.bench

bench-smoke: setup
	$(PY) -m load.bench --smoke --out load/results/smoke

clean:
	rm -rf .venv data .mypy_cache .ruff_cache .pytest_cache
