.PHONY: demo test bench check

# Serve an example shop on embedded defaults (SQLite, memory + disk cache; no Redis needed), in a
# new state folder each run. FRAMEWORK: flask (default), fastapi, django or builtin (plain WSGI).
FRAMEWORK ?= flask
PORT ?= 8000
comma := ,
DEMO_EXTRAS := demo$(if $(filter-out builtin,$(FRAMEWORK)),$(comma)$(FRAMEWORK))

demo:
	python3 -m pip install -q -e ".[$(DEMO_EXTRAS)]"
	python3 -m scalekit.cli demo --framework $(FRAMEWORK) --port $(PORT)

# Install what is missing, start Redis/PostgreSQL if they are not running, run the tests.
test:
	scripts/test

# Every benchmark in bench/, each printing its figures beside its targets.
bench:
	for b in bench/*.py; do python3 $$b || exit 1; done

# Lint and type-check (`pip install -e ".[dev]"` first): ruff over the code and its tests, mypy
# (strict) over the package and the adapters.
check:
	python3 -m ruff check scalekit adapters tests
	python3 -m mypy scalekit adapters
