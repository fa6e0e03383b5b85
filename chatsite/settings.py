"""Django settings for chatsite.

Every value comes from the environment through django-environ's typed helpers (`env.bool`, `env.int`,
`env.list`, `env.db_url`...). Every variable read here is listed, with its default, in `.env.example`.
A `.env` file beside `manage.py`, if present, is read first; real environment variables win over it.
"""

import os
import secrets
import sys
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _local_secret_key() -> str:
    """Return a per-install secret key kept in `var/secret_key`, created on first use.

    Used only when `SECRET_KEY` is not set, so that `make run` works with nothing configured while the key
    stays out of the repository and the database.
    """
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if env.bool("CHATSITE_HTTPS", default=False):
        # A production server must be given its key, not make one up on a disk that may not be kept.
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY must be set when CHATSITE_HTTPS=1 (production).")
    SECRET_KEY = _local_secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # daphne first, so that `manage.py runserver` serves ASGI too.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "channels",
    "chats",
    "pipelines",
    "knowledge",
    "protocols",
]

MIDDLEWARE = [
    # First, before anything reads a body: a chunked body (no Content-Length) gets its length, so it is read.
    "chats.middleware.BodyLengthMiddleware",
    # A view that meets a database outage answers 503 database_unavailable with Retry-After, not 500.
    "chats.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # After every middleware that acts on the view's response, as django-axes asks: it turns a locked-out
    # login into its lockout response.
    "axes.middleware.AxesMiddleware",
    # WhiteNoise serves /static/ and passes everything else through. It is the one sync-only middleware, and
    # under ASGI Django runs every middleware outside a sync-only one in sync mode too: placed last, it makes
    # the whole chain and the (sync) views run in one thread hop per request. Placed higher, each async-capable
    # middleware below it would hop between the event loop and the request's thread for its own
    # process_request and process_response (about a dozen hops per request).
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses logins for a username and address that failed too often.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default (nothing to install); PostgreSQL when DATABASE_URL says so.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# Under ASGI each request runs its sync code in a thread of its own, so connections are not reused across
# requests and many requests at once would each open one: on PostgreSQL, a psycopg pool bounds them (Django
# 5.1+; requests wait up to DATABASE_POOL_TIMEOUT seconds for a free connection). 0 turns the pool off.
DATABASES["default"]["CONN_MAX_AGE"] = 0
# A connection the server closed under us (a restart, pg_terminate_backend) is found before it is used: with the
# pool, Django passes psycopg_pool.ConnectionPool.check_connection as the pool's `check`, so each connection is
# checked (one empty round trip) as it is handed out and a broken one is replaced, never reused.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web requests and reply threads write at once: wait for the lock, take it up front, and let readers
    # read while one writes (WAL).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Vector search on SQLite loads sqlite-vec into each connection (knowledge.vectors), and this Python's
    # own sqlite3 module is built without extension loading: Django's SQLite backend gets the sqlean.py
    # build of the same DB-API module instead (SQLite 3.50, loadable extensions on).
    import sqlean

    sys.modules["sqlite3"] = sqlean
    sys.modules["sqlite3.dbapi2"] = sqlean.dbapi2
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=20)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Shown in pg_stat_activity, so an operator (or a test) can tell which process holds which connection.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "application_name", env.str("CHATSITE_DB_APPLICATION_NAME", default="chatsite")
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=30.0),
    }

AUTH_USER_MODEL = "chats.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing folder
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Browser libraries from npm (package.json; `make` runs npm ci): never copied into the repository.
    ("vendor/marked", BASE_DIR / "node_modules" / "marked" / "lib"),
    ("vendor/dompurify", BASE_DIR / "node_modules" / "dompurify" / "dist"),
    # Code highlighting: the ES module build with the common languages (the `highlight.js` package's es/ is CJS).
    ("vendor/highlight", BASE_DIR / "node_modules" / "@highlightjs" / "cdn-assets" / "es"),
    # Math: katex.mjs, katex.min.css and the fonts/ it names, all served from here (font-src falls back to 'self').
    ("vendor/katex", BASE_DIR / "node_modules" / "katex" / "dist"),
]
# Serve from the app folders directly, so that `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login"
# Whether people may create their own accounts at /signup (otherwise staff create them in the admin).
CHATSITE_ALLOW_SIGNUP = env.bool("CHATSITE_ALLOW_SIGNUP", default=False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["chats.auth.ApiKeyAuthentication", "chats.auth.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["chats.parsers.LimitedJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "chats.api_errors.JSONFallbackNegotiation",
    "EXCEPTION_HANDLER": "chats.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env.int("CHATSITE_PAGE_SIZE", default=50),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "chatsite API",
    "DESCRIPTION": (
        "Chats, messages and streamed replies (Server-Sent Events). Session cookie + X-CSRFToken, or "
        "`Authorization: Bearer <API key>`. Errors: `{error, message, fields?}`."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The browsable page's assets come from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A message's role and status appear in two components (Message, BranchMessage): name their enums once.
    "ENUM_NAME_OVERRIDES": {
        "MessageRoleEnum": "chats.models.Message.Role",
        "MessageStatusEnum": "chats.models.Message.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chats.schema.add_error_responses",
    ],
}

# Redis: the Celery broker and the event bus (one Redis Stream per assistant message).
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = env.str("CHATSITE_CELERY_QUEUE", default="chatsite")
# Document ingestion has a queue (and, in the Procfile, a worker) of its own, so that a long PDF never
# holds up replies.
CHATSITE_INGEST_QUEUE = env.str("CHATSITE_INGEST_QUEUE", default="chatsite-ingest")
CELERY_TASK_ROUTES = {"knowledge.ingest_document": {"queue": CHATSITE_INGEST_QUEUE}}
# Replies on a local model (llama_cpp) are CPU-bound: they have a queue of their own (the `local` lane, chatsite.jobs)
# served by CHATSITE_LOCAL_WORKERS prefork processes (the Procfile's `local`), one loaded model in each. Replies
# on remote models wait on the network: the `network` lane's worker (the Procfile's `worker`) carries
# CHATSITE_NETWORK_SLOTS of them at once in one process, on Celery's gevent pool.
CHATSITE_LOCAL_QUEUE = env.str("CHATSITE_LOCAL_QUEUE", default="chatsite-local")
CHATSITE_LOCAL_WORKERS = env.int("CHATSITE_LOCAL_WORKERS", default=1)
CHATSITE_NETWORK_SLOTS = env.int("CHATSITE_NETWORK_SLOTS", default=1000)
# Seconds one document's ingestion may take (a long PDF on a CPU takes minutes), apart from the replies' limits.
CHATSITE_INGEST_TIME_LIMIT = env.int("CHATSITE_INGEST_TIME_LIMIT", default=1800)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# A reply is acknowledged only when its task returns, and goes back to the queue if the worker dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One reply at a time per worker process: a long generation must not hold other replies hostage.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CHATSITE_TASK_TIME_LIMIT", default=600)  # seconds, hard limit
# The soft limit raises inside the reply, which then ends with `error` `timeout`; the hard limit kills it.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CHATSITE_TASK_SOFT_TIME_LIMIT", default=CELERY_TASK_TIME_LIMIT - 10)
# Redis redelivers an unacknowledged task after the visibility timeout: it must exceed the longest task,
# or a reply (or a document's ingestion) still running would be handed to a second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": max(CELERY_TASK_TIME_LIMIT, CHATSITE_INGEST_TIME_LIMIT) * 2}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# When the worker loses the broker (a Redis restart), the replies it is generating go on (their writes to Redis
# are retried) rather than being stopped; their deliveries, put back in the queue, find them alive (run_reply).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Celery's Django fixup closes a prefork child's whole database pool at every task boundary (celery#10554),
# so each reply opened a new PostgreSQL connection before its claim (about 20 ms). A reuse count turns that
# off except every CELERY_DB_REUSE_MAX tasks; chatsite.celery gives each task's connections back to the pool
# (or closes them, with no pool) at the same boundaries instead. The pool inherited at fork is still closed.
CELERY_DB_REUSE_MAX = 1000

# The event stream (DESIGN.md section 4).
CHATSITE_SSE_PING_SECONDS = env.float("CHATSITE_SSE_PING_SECONDS", default=15.0)
CHATSITE_STREAM_MAXLEN = env.int("CHATSITE_STREAM_MAXLEN", default=20000)  # entries per reply stream
CHATSITE_STREAM_TTL_SECONDS = env.int("CHATSITE_STREAM_TTL_SECONDS", default=3600)  # kept after the end
CHATSITE_STREAM_KEY_PREFIX = env.str("CHATSITE_STREAM_KEY_PREFIX", default="chatsite:stream:")
# Share links (issue 18): how often (seconds) a viewer's stream checks whether its link was revoked or expired,
# so that revoking ends open viewers' streams within about this long.
CHATSITE_SHARE_CHECK_SECONDS = env.float("CHATSITE_SHARE_CHECK_SECONDS", default=0.25)
# Milliseconds over which the worker joins a reply's text deltas into one `content` event (one XADD). The
# first delta of each answer goes out at once; the rest are sent at most once per window, and everything
# pending is sent before any other event and at the end. 0 sends every delta as it comes.
CHATSITE_DELTA_BATCH_MS = env.float("CHATSITE_DELTA_BATCH_MS", default=20.0)

# Input limits.
CHATSITE_MAX_MESSAGE_CHARS = env.int("CHATSITE_MAX_MESSAGE_CHARS", default=32000)
CHATSITE_MAX_TITLE_CHARS = 200
# Most earlier messages of a branch put into one prompt (the context window may allow fewer).
CHATSITE_MAX_HISTORY_MESSAGES = env.int("CHATSITE_MAX_HISTORY_MESSAGES", default=50)

# Documents and retrieval (knowledge)
CHATSITE_MAX_UPLOAD_BYTES = env.int("CHATSITE_MAX_UPLOAD_BYTES", default=20 * 1024 * 1024)  # one file
CHATSITE_EMBEDDING_MODEL = env.str("CHATSITE_EMBEDDING_MODEL", default="all-minilm-l6-v2")  # for new collections
CHATSITE_CHUNK_TOKENS = env.int("CHATSITE_CHUNK_TOKENS", default=200)  # new collections' chunk size
CHATSITE_CHUNK_OVERLAP_TOKENS = env.int("CHATSITE_CHUNK_OVERLAP_TOKENS", default=40)
CHATSITE_MAX_ATTACHMENTS = 20  # documents attached to one message (seed 002)
# Largest request body, in bytes; larger ones get 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("CHATSITE_MAX_REQUEST_BYTES", default=1_048_576)

# Search, export and import of chats (issue 18).
CHATSITE_SEARCH_MAX_QUERY_CHARS = env.int("CHATSITE_SEARCH_MAX_QUERY_CHARS", default=200)
CHATSITE_IMPORT_MAX_BYTES = env.int("CHATSITE_IMPORT_MAX_BYTES", default=20 * 1024 * 1024)  # one import file
CHATSITE_IMPORT_MAX_CHATS = env.int("CHATSITE_IMPORT_MAX_CHATS", default=1000)  # chats in one file
CHATSITE_IMPORT_MAX_MESSAGES = env.int("CHATSITE_IMPORT_MAX_MESSAGES", default=5000)  # messages in one chat
CHATSITE_IMPORT_MAX_MESSAGE_CHARS = env.int("CHATSITE_IMPORT_MAX_MESSAGE_CHARS", default=200_000)  # one message

# Abuse limits, checked before anything is written or enqueued.
CHATSITE_SEND_RATE = env.str("CHATSITE_SEND_RATE", default="30/min")  # sends + regenerations per user
CHATSITE_MAX_CONCURRENT_REPLIES = env.int("CHATSITE_MAX_CONCURRENT_REPLIES", default=3)  # per user
# Failed logins (django-axes): the 6th bad password in a row locks the username at that address.
AXES_FAILURE_LIMIT = env.int("CHATSITE_LOGIN_FAILURE_LIMIT", default=6)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_COOLOFF_TIME = env.float("CHATSITE_LOGIN_LOCKOUT_HOURS", default=0.25)  # hours
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "chats.api_errors.login_locked_out"
AXES_VERBOSE = False

# The embedded local model (llama_cpp provider).
CHATSITE_LLAMA_THREADS = env.int("CHATSITE_LLAMA_THREADS", default=0)  # 0 = llama.cpp decides

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # django-axes logs every failed login at INFO; warnings (lockouts) are what operators need.
    "loggers": {"axes": {"level": "WARNING"}},
}

CSRF_FAILURE_VIEW = "chats.api_errors.csrf_failure"

# Reply lifecycle: heartbeats, the watchdog, cancel, Redis outages.
CHATSITE_HEARTBEAT_SECONDS = env.float("CHATSITE_HEARTBEAT_SECONDS", default=2.0)  # a worker's beat interval
# A reply whose worker has not beaten and whose stream has been silent this long is ended as worker_lost.
CHATSITE_WORKER_LOST_SECONDS = env.float("CHATSITE_WORKER_LOST_SECONDS", default=20.0)
CHATSITE_WATCHDOG_SECONDS = env.float("CHATSITE_WATCHDOG_SECONDS", default=5.0)  # how often the watchdog runs
# A reply still queued after this long is sent to the queue again (a Redis restart can lose the queue).
CHATSITE_REQUEUE_SECONDS = env.float("CHATSITE_REQUEUE_SECONDS", default=60.0)
CHATSITE_CANCEL_WAIT_SECONDS = env.float("CHATSITE_CANCEL_WAIT_SECONDS", default=5.0)
# Most times a worker starts one reply: its claim, and each take-over or requeue after its worker died before
# any text. Then the reply ends with `error` `worker_failed` (not retryable).
CHATSITE_MAX_REPLY_ATTEMPTS = env.int("CHATSITE_MAX_REPLY_ATTEMPTS", default=3)
# Seconds one reply may take across all its steps: each step gets the time left (an sql step's statement timeout
# is at most that), and a reply past it ends with `error` `time_budget_exceeded`, keeping its text. Keep it below
# CHATSITE_TASK_SOFT_TIME_LIMIT, the backstop for a step that cannot be interrupted (an answer that stalls).
CHATSITE_REPLY_TIME_BUDGET_SECONDS = env.float("CHATSITE_REPLY_TIME_BUDGET_SECONDS", default=300.0)
# How long a worker keeps trying a reply's final save while the database restarts (chats.lifecycle).
CHATSITE_DB_RETRY_SECONDS = env.float("CHATSITE_DB_RETRY_SECONDS", default=15.0)
CHATSITE_REDIS_RETRY_SECONDS = env.float("CHATSITE_REDIS_RETRY_SECONDS", default=30.0)
# Text to SQL (seed 001, pipelines.text_to_sql): the connector its steps and endpoints use when none is named (the
# seeded demo sales database), the model its endpoints use when the request names none, and how long a
# connector's introspected tables are kept per process before they are read again.
CHATSITE_TEXT_TO_SQL_CONNECTOR = env.str("CHATSITE_TEXT_TO_SQL_CONNECTOR", default="demo")
CHATSITE_TEXT_TO_SQL_MODEL = env.str("CHATSITE_TEXT_TO_SQL_MODEL", default="smollm2-135m")
CHATSITE_TEXT_TO_SQL_SCHEMA_CACHE_SECONDS = env.float("CHATSITE_TEXT_TO_SQL_SCHEMA_CACHE_SECONDS", default=300.0)
# Most connections each of a process's Redis pools holds (the blocking one, the asyncio one, the cache's); a
# command waits for a free one rather than opening more, so a web process holds as many with 10 open streams as
# with 5,000. The pub/sub connection that follows the streams comes on top.
CHATSITE_REDIS_MAX_CONNECTIONS = env.int("CHATSITE_REDIS_MAX_CONNECTIONS", default=10)
# bench/relay.py only: workers add `t` (their XADD time, epoch seconds) to every event.
CHATSITE_BENCH_TIMESTAMPS = env.bool("CHATSITE_BENCH_TIMESTAMPS", default=False)
CHATSITE_MAX_IDEMPOTENCY_KEY_CHARS = 200

# /readyz (chatsite.health): seconds each check (database, Redis, broker) may take before it counts as failed.
CHATSITE_READY_TIMEOUT_SECONDS = env.float("CHATSITE_READY_TIMEOUT_SECONDS", default=2.0)

CELERY_BEAT_SCHEDULE = {
    "end-lost-replies": {"task": "pipelines.watchdog", "schedule": CHATSITE_WATCHDOG_SECONDS},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")


def _embedded_mode() -> tuple[bool, str]:
    """Whether to run embedded (one process, no Redis, no Celery) and why.

    CHATSITE_EMBEDDED=1 or 0 decides; unset or `auto`, embedded mode is chosen when Redis does not answer.
    """
    wanted = env.str("CHATSITE_EMBEDDED", default="auto").strip().lower()
    if wanted in ("1", "true", "yes", "on"):
        return True, "CHATSITE_EMBEDDED=1"
    if wanted in ("0", "false", "no", "off"):
        return False, "CHATSITE_EMBEDDED=0"
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except (redis.RedisError, OSError) as exc:
        return True, f"no Redis answers at {REDIS_URL} ({exc.__class__.__name__})"
    return False, f"Redis answers at {REDIS_URL}"


CHATSITE_EMBEDDED, CHATSITE_MODE_REASON = _embedded_mode()
# Daphne processes of the web role on one port (scripts/serve_web.py; embedded mode always runs one).
# 0 (the default): one per core this process may run on.
CHATSITE_WEB_PROCESSES = env.int("CHATSITE_WEB_PROCESSES", default=0) or len(os.sched_getaffinity(0))
# Embedded mode: replies on remote models are generated on this many threads of the web process (the `network`
# lane); replies on local models on CHATSITE_LOCAL_WORKERS threads (the `local` lane).
CHATSITE_EMBEDDED_WORKERS = env.int("CHATSITE_EMBEDDED_WORKERS", default=16)


def _cache_retry() -> dict:
    """redis-py retry options for the cache's connections: commands that cannot connect are tried again."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    retries = max(1, int(min(10.0, CHATSITE_REDIS_RETRY_SECONDS) / 0.5))
    return {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


# Rate limits count in the cache: Redis in full mode, so that every web process counts together.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        if CHATSITE_EMBEDDED
        else {
            # Django's RedisCache, with one redis-py client per pool (chatsite.redis_pool.RedisCache).
            "BACKEND": "chatsite.redis_pool.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "chatsite",
            # Every request's cache object shares one pool (Django would open a connection per request); a
            # request waits up to 10 s for a free connection.
            "OPTIONS": {
                "pool_class": "chatsite.redis_pool.SharedConnectionPool",
                "max_connections": CHATSITE_REDIS_MAX_CONNECTIONS,
                "timeout": 10,
                # A Redis restart delays a request's session read (up to 10 s, or CHATSITE_REDIS_RETRY_SECONDS
                # if less) instead of failing it with a 500.
                **_cache_retry(),
            },
        }
    )
}

# Sessions are read from the cache (Redis in full mode) and written through to the database, so an
# authenticated request costs no session query while the cache holds it, and nothing is lost if it is flushed.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"


def _image_hosts(entries: list[str]) -> list[str]:
    """`CHATSITE_IMAGE_HOSTS` entries -> normalised hosts (`host`, `host:port` or `*.domain`, lower case).

    Each entry is a host name, optionally after `https://` and with a port; `*.domain` allows every subdomain.
    Anything else (a path, a quote, a space, a `;`...) could change the CSP it is copied into, so it stops the
    start with ImproperlyConfigured.
    """
    import re

    from django.core.exceptions import ImproperlyConfigured

    label = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
    pattern = re.compile(rf"(\*\.)?{label}(\.{label})*(:[0-9]{{1,5}})?", re.ASCII)
    hosts = []
    for entry in entries:
        host = entry.strip().lower().removeprefix("https://").removesuffix("/")
        if not host:
            continue
        found = pattern.fullmatch(host)
        port = found[3] if found else None
        if not found or (host.startswith("*.") and "." not in host[2:]) or (port and not 0 < int(port[1:]) < 65536):
            raise ImproperlyConfigured(
                f"CHATSITE_IMAGE_HOSTS: {entry!r} is not a host name (like images.example.com, "
                "https://images.example.com, images.example.com:8443 or *.example.com)."
            )
        hosts.append(host)
    return hosts


# Hosts whose images replies may show (HTTPS only). Rendered Markdown shows any other remote image as a link,
# and the CSP below stops the browser from loading it: an image URL written by a prompt-injected reply would
# otherwise send the conversation to its host when the page loads it.
CHATSITE_IMAGE_HOSTS = _image_hosts(env.list("CHATSITE_IMAGE_HOSTS", default=[]))

# Content Security Policy for the pages (django-csp): our own scripts and styles only, no inline script.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # No 'unsafe-inline', not even for style attributes: KaTeX (static/chatsite/render.js) sets its sizes
        # through CSSOM (element.style), which the CSP allows; only style attributes parsed from HTML are blocked.
        "style-src": ["'self'"],
        # Images: ours, inline ones (data:, blob:) and the CHATSITE_IMAGE_HOSTS; no other site.
        "img-src": ["'self'", "data:", "blob:", *(f"https://{host}" for host in CHATSITE_IMAGE_HOSTS)],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# Production: behind a TLS-terminating proxy, set CHATSITE_HTTPS=1 (secure cookies, HSTS, redirects).
CHATSITE_HTTPS = env.bool("CHATSITE_HTTPS", default=False)
if CHATSITE_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("CHATSITE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("CHATSITE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("CHATSITE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
