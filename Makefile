.PHONY: demo test bench check

# Run the demo shop on embedded defaults (SQLite, memory + disk cache; no Redis needed).
demo:
	python3 -m pip install -q -e ".[server,flask]"
	python3 -m scalekit.cli demo --framework flask

# Install what is missing, start Redis/PostgreSQL if they are not running, run the tests.
test:
	scripts/test

# Every benchmark in bench/, each printing its figures beside its targets.
bench:
	for b in bench/*.py; do python3 $$b || exit 1; done

check:
	ruff check scalekit adapters tests
	mypy scalekit
