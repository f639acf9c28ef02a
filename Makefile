# The two commands of the README. Each creates .venv on a fresh machine, so it is the only step.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick lint clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# Byte-compiled at install: where PYTHONDONTWRITEBYTECODE is set, as on CI, Python would otherwise
	# recompile torch and Lightning from source in every process it starts. pip compiles one file at a
	# time; compileall with a worker per core does the same work in about half the time. As under pip,
	# a file written for a newer Python (torch ships a 3.12-only test helper) is skipped, not an error.
	$(VENV)/bin/pip install --quiet --no-compile -e '.[dev]'
	$(PYTHON) -m compileall -q -j 0 -x '/tests?/' $$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m si_lightning.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two workers, one per core of the CI machine, one thread each (more threads than cores make OpenMP's
# waiting threads spin against each other); tests are spread one by one, except the groups of
# tests/conftest.py that share an expensive fixture (it runs once, on one worker).
test: lint
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 --dist loadgroup

test-quick: lint
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n 2 --dist loadgroup -m "not slow" -x -q

clean:
	rm -rf $(VENV) runs .pytest_cache
