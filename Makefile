# Two commands do everything: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install ui bench clean sql-server

$(STAMP): pyproject.toml constraints.txt
	@scripts/check_java.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# dev includes the spark-cluster extra, whose provider drags in pyspark-client, which shadows
	# pyspark's files; the full pyspark (with its JVM jars) must be the one on disk. `pip install
	# -e '.[all]'` (no cluster provider) needs no such step.
	$(BIN)/pip install -q --force-reinstall --no-deps "$$(grep '^pyspark==' constraints.txt)"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	@scripts/check_java.sh
	$(BIN)/mer demo

# Two workers, one test file each at a time (module fixtures stay in one process), files in collection
# order, where tests/conftest.py puts the long end-to-end ones first: they mostly wait on JVMs, Airflow
# processes and the scheduler, so two of them share 2 cores well (serial 29 min; see bench/RESULTS.md).
test: $(STAMP) browser
	@scripts/check_java.sh
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

ui: $(STAMP)
	scripts/airflow_ui.sh

# Headless Chromium + chromedriver for the browser tests (run report, Airflow UI): installed when root with
# apt-get may do it; otherwise those tests skip, and this says why.
.PHONY: browser
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -q && apt-get install -y -q chromium chromium-driver) \
	  || echo "browser: apt-get could not install chromium chromium-driver; the browser tests will be skipped"; \
	else echo "browser: no /usr/bin/chromium + /usr/bin/chromedriver and no root apt-get to install them;" \
	  "the browser tests will be skipped (apt-get install -y chromium chromium-driver)"; fi

# Analyst SQL until Ctrl-C: Spark Connect sc://127.0.0.1:15002 and Thrift JDBC jdbc:hive2://127.0.0.1:10000
sql-server: $(STAMP)
	@scripts/check_java.sh
	$(BIN)/mer serve-sql

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf var airflow_home .pytest_cache
