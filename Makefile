# chatsite: `make run` starts the whole thing, `make test` runs the whole suite. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test database (pytest-django creates test_<name> from it) and a Redis database of its own.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

# llama-cpp-python builds llama.cpp from source. Build for a portable x86-64 baseline (AVX2): a native build
# also turns on AMX, which crashes (SIGSEGV in llama_decode) in this workplace's VMs that advertise it, and a
# cached native wheel would break on any other CPU.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# The demo sales database that the seeded "SQL analyst" workflow reads (manage.py seed_demo_database creates it
# with this admin URL), and the URL the demo connector reads it with: a role that may only SELECT its table
# (seed_demo_database creates that role too; connectors refuse superusers).
export CHATSITE_DEMO_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsite_demo
export CHATSITE_DEMO_CONNECTOR_URL ?= postgres://chatsite_demo_reader@127.0.0.1:5432/chatsite_demo

.PHONY: run test lint format install install-dev pgvector chaos chaos-soak bench bench-send bench-retrieval \
	bench-sql proto cluster cluster-chaos cluster-tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the requirements change. llama-cpp-python builds from source the first time
# (about 6 minutes on 2 cores); pip caches the wheel afterwards.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	@echo "Installing requirements (the first time, llama-cpp-python compiles for about 6 minutes)..."
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Browser libraries (marked, DOMPurify) from the npm registry, pinned by package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests drive Debian's Chromium (a browser download is impossible here).
/usr/bin/chromium:
	apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium

# The cluster (bench/cluster.py) builds hosts as network namespaces (iproute2) behind Debian's nginx.
/usr/sbin/nginx /usr/sbin/ip:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light iproute2
cluster-tools: /usr/sbin/nginx /usr/sbin/ip

# pgvector for PostgreSQL (document search); Debian's source package built against the local server.
pgvector:
	@sh scripts/install-pgvector.sh

install: $(VENV)/.installed node_modules/.installed
install-dev: install $(VENV)/.installed-dev /usr/bin/chromium pgvector cluster-tools

# Full mode (Redis answers): the web role, a Celery worker and beat (Procfile). Embedded mode (no Redis, or
# CHATSITE_EMBEDDED=1): one daphne process alone, generating replies on a thread pool. The web role is
# scripts/serve_web.py: it listens once (backlog 4096, not Twisted's 50: when thousands of streams open at once,
# connections wait to be accepted instead of timing out) and runs CHATSITE_WEB_PROCESSES daphne processes on
# that socket (default one per core; always one in embedded mode).
run: install
	@case "$${DATABASE_URL:-}" in postgres*) sh scripts/install-pgvector.sh ;; esac
	$(BIN)/python manage.py migrate --no-input
	@$(BIN)/python manage.py ensure_demo_user
	@$(BIN)/python manage.py seed_demo_database || echo "(The SQL analyst workflow needs that database; chat works without it.)"
	@echo "chatsite: http://$${CHATSITE_HOST:-127.0.0.1}:$${CHATSITE_PORT:-8000}/  (API under /api/, admin at /admin/)"
	@if $(BIN)/python manage.py chatsite_mode; then \
		$(BIN)/honcho start; \
	else \
		CHATSITE_EMBEDDED=1 $(BIN)/python scripts/serve_web.py; \
	fi

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest
	@echo "Screenshots from the browser tests: $(CURDIR)/var/screenshots/"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The chaos test of the reply lifecycle at full size (120 replies); prints its figures (bench/chaos.py).
chaos: install-dev
	$(BIN)/python bench/chaos.py

# The chaos test CHAOS_RUNS times in a row (default 20) with a CPU-bound process beside it; prints each run's
# figures and a final line, and fails if any run lost, duplicated or changed anything (bench/chaos_soak.py).
CHAOS_RUNS ?= 20
chaos-soak: install-dev
	CHAOS_RUNS=$(CHAOS_RUNS) $(BIN)/python bench/chaos_soak.py

# The benchmarks of the reply path, about 10 minutes: the relay (chatsite's stream path against a bare ASGI relay,
# bench/relay.py), then the whole path (chatsite as the Procfile starts it in front of an OpenAI-compatible
# stand-in server, against the same server streamed directly, bench/whole_path.py). Each prints its figures.
# WHOLE_PATH_ARGS, e.g. "--only paced,cpu" or "--quick", is passed to the second.
WHOLE_PATH_ARGS ?=
bench: install-dev
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/whole_path.py $(WHOLE_PATH_ARGS)

# CPU of one send (POST .../messages/stream, session and API key) in-process against a bare DRF view and a chat's
# GET, with queries per request; `--profile N` adds a cProfile of N sends (bench/send_cpu.py).
bench-send: install-dev
	$(BIN)/python bench/send_cpu.py

# Retrieval quality: recall@5 on tests/retrieval_set.py, ingestion chunks/s, query latency, PostgreSQL and
# SQLite, against exact search; prints its figures (bench/retrieval.py).
bench-retrieval: install-dev
	$(BIN)/python bench/retrieval.py

# Seed 000's Connect-RPC code, protocols/connect/stream_pb.py and stream_connect.py (committed), from
# protocols/connect/stream.proto: grpcio-tools' protoc runs protoc-gen-py (protobuf-py messages) and
# protoc-gen-connectrpc (the service, the ASGI application and the clients). tests/test_connect_rpc.py checks that
# the committed files match the .proto.
proto: install-dev
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I. --py_out=. --py_opt=init_files=false --connectrpc_out=. \
		protocols/connect/stream.proto

# Text to SQL (seed 001): execution accuracy on 30 questions over the demo sales database and each phase's time,
# for the embedded SmolLM2 or any model: make bench-sql BENCH_SQL_ARGS="--model <modelId>" or
# BENCH_SQL_ARGS="--openai-base-url http://host/v1 --openai-model name --api-key-env VAR" (bench/text_to_sql.py).
BENCH_SQL_ARGS ?=
bench-sql: install-dev
	$(BIN)/python bench/text_to_sql.py $(BENCH_SQL_ARGS)

# A cluster on this machine (needs root): nginx, 2 web hosts, 2 worker hosts, beat, and a data host with its own
# PostgreSQL and Redis, each a network namespace; prints the addresses, runs until Ctrl-C, then removes it all
# (`python bench/cluster.py stop` cleans up after a run that was killed).
cluster: install-dev
	$(BIN)/python bench/cluster.py start

# Faults across hosts on that cluster (a web host killed, a worker host's link cut, PostgreSQL and Redis
# restarted) while 120 replies stream through nginx, and throughput with 2+2 hosts against 1+1; prints the
# figures (bench/cluster_chaos.py).
cluster-chaos: install-dev
	$(BIN)/python bench/cluster_chaos.py

clean:
	rm -rf $(VENV) var .pytest_cache
