# RestMQ: `make run` starts the broker, `make test` runs the tests and then the
# linters (`make lint`: flake8 and mypy). Both set up .venv from the project's
# own files first (cyclone without its stale pins).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
WORKERS ?= 1
PORT ?= 8888
# the Amazon SQS-compatible API of `make run`: on ElasticMQ's port 9324 beside the
# default PORT (another PORT leaves it off unless SQS_PORT is given); SQS_PORT=0: off
SQS_PORT ?= $(if $(filter 8888,$(PORT)),9324,0)

.PHONY: run test install install-test browser proxy curl-dev bench bench-tools bench-instructions lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	# cyclone 1.3 pins twisted==19.2.1, which does not build on Python 3.11
	$(BIN)/pip install --quiet --no-deps cyclone==1.3
	# RestMQ itself, editable, its dependencies being the pins above: `restmq`,
	# `restmq-cli`, `twistd -n restmq` and `import restmq` work from any folder.
	# (compat: a .pth entry for this folder, which is how twistd finds twisted/plugins)
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet --no-deps --config-settings editable_mode=compat -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt | curl-dev
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test browser proxy

# Debian's chromium for the browser tests (the playwright package drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "make test: could not install chromium (needs root and apt)"; exit 1; }; }

# Debian's libcurl4-openssl-dev: pycurl (kombu's SQS transport, for the Celery
# test) is built against it when requirements-test.txt is installed.
curl-dev:
	@command -v curl-config >/dev/null 2>&1 || { \
	  echo "installing Debian's libcurl4-openssl-dev to build pycurl for the SQS tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcurl4-openssl-dev >/dev/null) \
	  || { echo "make test: could not install libcurl4-openssl-dev (needs root and apt)"; exit 1; }; }

# Debian's nginx and openssl: the dashboard is tested behind etc/nginx/restmq.conf over TLS.
proxy:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's$$missing for the nginx test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || { echo "make test: could not install$$missing (needs root and apt)"; exit 1; }; \
	fi

run: install
	$(BIN)/restmq --workers $(WORKERS) -- --port $(PORT) --sqs-port $(SQS_PORT) $(ARGS)

# lint runs only once the tests passed, so a test failure is the first thing shown
# lint first (seconds), then the tests, whose summary ends the output
test: install-test
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.installed-bench: $(VENV)/.installed bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

# Debian's wrk (HTTP load), nginx with nchan (the fan-out baseline) and activemq
# (ActiveMQ's STOMP broker, figure v; a JRE comes with it); a row whose tool is
# missing reads "n/a" instead of failing the run.
bench-tools:
	@missing=""; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing="$$missing libnginx-mod-nchan"; \
	[ -e /usr/share/activemq/bin/activemq.jar ] || missing="$$missing activemq"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's$$missing for the benchmarks"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	  || echo "make bench: could not install$$missing (needs root and apt); those rows will read n/a"; \
	fi

# instructions per request under valgrind's callgrind (bench/instructions.py): the
# per-request cost that a loaded machine does not disturb
bench-instructions: $(VENV)/.installed-bench
	@command -v valgrind >/dev/null 2>&1 || { \
	  echo "installing Debian's valgrind for bench/instructions.py"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null) \
	  || { echo "make bench-instructions: could not install valgrind (needs root and apt)"; exit 1; }; }
	PYTHONPATH=. $(BIN)/python -m bench.instructions $(BENCH_ARGS)

# `make bench` (every phase, about 11 minutes; BENCH_ARGS=--quick for a one-minute smoke run)
bench: $(VENV)/.installed-bench bench-tools
	$(BIN)/python -m bench $(BENCH_ARGS)

# flake8 (setup.cfg [flake8]) and mypy (setup.cfg [mypy]: files = restmq); any
# finding fails the target, and with it `make test`
lint: $(VENV)/.installed-test
	$(BIN)/python -m flake8 restmq tests bench
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) var twisted/plugins/dropin.cache build dist restmq.egg-info
