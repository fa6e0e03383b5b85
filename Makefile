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

.PHONY: run test lint format install install-dev pgvector chaos chaos-soak bench bench-retrieval clean

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
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# pgvector for PostgreSQL (document search); Debian's source package built against the local server.
pgvector:
	@sh scripts/install-pgvector.sh

install: $(VENV)/.installed node_modules/.installed
install-dev: install $(VENV)/.installed-dev /usr/bin/chromium pgvector

# Full mode (Redis answers): daphne, a Celery worker and beat (Procfile). Embedded mode (no Redis, or
# CHATSITE_EMBEDDED=1): daphne alone, generating replies on a thread pool. daphne listens with a backlog of 4096
# (Twisted's default is 50): when thousands of streams open at once, connections wait to be accepted instead of
# timing out.
run: install
	@case "$${DATABASE_URL:-}" in postgres*) sh scripts/install-pgvector.sh ;; esac
	$(BIN)/python manage.py migrate --no-input
	@$(BIN)/python manage.py ensure_demo_user
	@$(BIN)/python manage.py seed_demo_database || echo "(The SQL analyst workflow needs that database; chat works without it.)"
	@echo "chatsite: http://$${CHATSITE_HOST:-127.0.0.1}:$${CHATSITE_PORT:-8000}/  (API under /api/, admin at /admin/)"
	@if $(BIN)/python manage.py chatsite_mode; then \
		$(BIN)/honcho start; \
	else \
		CHATSITE_EMBEDDED=1 $(BIN)/daphne -e tcp:port=$${CHATSITE_PORT:-8000}:interface=$${CHATSITE_HOST:-127.0.0.1}:backlog=4096 \
			chatsite.asgi:application; \
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

# Retrieval quality: recall@5 on tests/retrieval_set.py, ingestion chunks/s, query latency, PostgreSQL and
# SQLite, against exact search; prints its figures (bench/retrieval.py).
bench-retrieval: install-dev
	$(BIN)/python bench/retrieval.py

clean:
	rm -rf $(VENV) var .pytest_cache
