"""Shared fixtures: the users (alice owns, bob is another user, an anonymous client), API clients that
enforce CSRF as a browser would meet it, and models to chat with.

Tests run against real PostgreSQL (DATABASE_URL) and real Redis (REDIS_URL); `make test` points both at
databases of their own.
"""

import os
import uuid

import pytest
from django.conf import settings as settings_module
from rest_framework.test import APIClient

from chats.models import Chat, User
from pipelines.models import ModelConfig, Workflow

PASSWORD = "correct horse battery staple"

# The demo database as `make` sets it (admin URL, and the demo connector's read-only role), for runs of pytest
# without make; set here, before any live stack starts, so that its workers read the same.
DEMO_DATABASE_URL = os.environ.setdefault(
    "CHATSITE_DEMO_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chatsite_demo"
)
DEMO_CONNECTOR_URL = os.environ.setdefault(
    "CHATSITE_DEMO_CONNECTOR_URL", "postgres://chatsite_demo_reader@127.0.0.1:5432/chatsite_demo"
)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Real hashing costs a third of a second per user; what these tests check does not depend on it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_streams(settings):
    # Each test gets its own Redis Stream keys, so tests never read each other's events.
    settings.CHATSITE_STREAM_KEY_PREFIX = f"test:{uuid.uuid4().hex}:"


@pytest.fixture(autouse=True)
def _one_event_per_delta(settings):
    # In-process tests check events delta by delta; the tests of delta batching set a window themselves.
    settings.CHATSITE_DELTA_BATCH_MS = 0


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob", "bob@example.com", PASSWORD)


def logged_in_client(user: User) -> APIClient:
    """An API client with `user`'s session and the CSRF token sent on every request."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/api/auth/csrf")
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


@pytest.fixture
def anon(db) -> APIClient:
    return APIClient(enforce_csrf_checks=True)


@pytest.fixture
def alice_client(alice) -> APIClient:
    return logged_in_client(alice)


@pytest.fixture
def bob_client(bob) -> APIClient:
    return logged_in_client(bob)


@pytest.fixture
def alice_chat(alice) -> Chat:
    return Chat.objects.create(owner=alice, title="Alice's chat")


@pytest.fixture
def bob_chat(bob) -> Chat:
    return Chat.objects.create(owner=bob, title="Bob's chat")


@pytest.fixture
def scripted_model(db) -> ModelConfig:
    """A model backed by the scripted provider: deterministic deltas, for tests of our own logic."""
    model, _ = ModelConfig.objects.update_or_create(
        model_id="scripted",
        defaults={
            "display_name": "Scripted",
            "provider": "scripted",
            "context_window": 1000,
            "default_max_tokens": 100,
            "options": {"script": ["Hello", ",", " world", "!"]},
        },
    )
    return model


@pytest.fixture
def smollm2(db) -> ModelConfig:
    """The embedded SmolLM2 model (the data migration's row, recreated if a flush removed it)."""
    model, _ = ModelConfig.objects.update_or_create(
        model_id="smollm2-135m",
        defaults={
            "display_name": "SmolLM2 135M Instruct (local)",
            "provider": "llama_cpp",
            "provider_model": "",
            "context_window": 8192,
            "default_max_tokens": 512,
        },
    )
    return model


@pytest.fixture
def minilm(db):
    """The default embedding model, all-MiniLM-L6-v2 (the data migration's row, recreated if a flush removed
    it)."""
    from knowledge.models import EmbeddingModel

    model, _ = EmbeddingModel.objects.update_or_create(
        name="all-minilm-l6-v2",
        defaults={"display_name": "all-MiniLM-L6-v2 (local)", "provider": "local", "dimensions": 384},
    )
    return model


@pytest.fixture
def bob_workflow(bob) -> Workflow:
    return Workflow.objects.create(owner=bob, name="Bob's private workflow", system_prompt="Be terse.")


@pytest.fixture
def shared_workflow(db) -> Workflow:
    return Workflow.objects.create(owner=None, name="Shared", system_prompt="You are a helpful assistant.")


# --- End-to-end: a live stack (tests/live.py) on the test database -------------------------------------

E2E_PASSWORD = "e2e password 1234"


def _test_database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker):
    """Full mode: daphne, a Celery worker and beat on the test database; stopped when the session ends."""
    from tests.live import start_stack

    stack = start_stack(_test_database_url(), settings_module.REDIS_URL)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def one_slot_stack(django_db_setup, django_db_blocker):
    """Full mode whose network lane has one slot (a gevent pool of one): for the tests of replies that wait."""
    from tests.live import start_stack

    stack = start_stack(_test_database_url(), settings_module.REDIS_URL, concurrency=1)
    yield stack
    stack.stop()


@pytest.fixture
def one_slot_session(one_slot_stack, carol):
    """An HTTP client logged in as carol on `one_slot_stack`, and its CSRF token."""
    from tests.live import login

    client, token = login(one_slot_stack.base_url, carol.username, E2E_PASSWORD)
    yield client, token
    client.close()


@pytest.fixture(scope="session")
def embedded_stack(django_db_setup, django_db_blocker):
    """Embedded mode: daphne alone, events in memory, no Redis reachable (its URL points nowhere)."""
    from tests.live import start_stack

    # Its watchdog would act on the full-mode stack's replies in the shared test database: keep it idle.
    stack = start_stack(
        _test_database_url(), "redis://127.0.0.1:1/0", embedded=True, extra_env={"CHATSITE_WATCHDOG_SECONDS": "3600"}
    )
    yield stack
    stack.stop()


@pytest.fixture(params=["full", "embedded"])
def contract_stack(request):
    """Each mode in turn, for tests of the API contract that both modes must keep."""
    return request.getfixturevalue("live_stack" if request.param == "full" else "embedded_mode")


@pytest.fixture
def embedded_mode(embedded_stack):
    """The embedded stack, for one test, with the full-mode stack's watchdog paused meanwhile: both use the test
    database, and it would take embedded replies for lost ones (`tests.live.full_mode_watchdogs_paused`)."""
    from tests.live import full_mode_watchdogs_paused

    with full_mode_watchdogs_paused():
        yield embedded_stack


@pytest.fixture
def contract_session(contract_stack, carol):
    """An HTTP client logged in as carol on `contract_stack`, and its CSRF token."""
    from tests.live import login

    client, token = login(contract_stack.base_url, carol.username, E2E_PASSWORD)
    yield client, token
    client.close()


@pytest.fixture
def carol(transactional_db) -> User:
    """A user the live servers can log in: hashed with Django's default hasher, not the tests' fast one."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = User(username=f"carol-{uuid.uuid4().hex[:8]}")
    user.password = PBKDF2PasswordHasher().encode(E2E_PASSWORD, PBKDF2PasswordHasher().salt())
    user.save()
    return user


@pytest.fixture
def session(live_stack, carol):
    """An HTTP client logged in as carol over the real API, and its CSRF token."""
    from tests.live import login

    client, token = login(live_stack.base_url, carol.username, E2E_PASSWORD)
    yield client, token
    client.close()


@pytest.fixture
def sql_analyst(db, monkeypatch):
    """The seeded shared "SQL analyst" workflow, its demo connector, and the demo sales database.

    Recreated here because transactional tests empty the tables the data migration filled.
    """
    import importlib

    from django.core.management import call_command

    from pipelines.models import Connector

    seed = importlib.import_module("pipelines.migrations.0004_sql_analyst")
    monkeypatch.setenv("CHATSITE_DEMO_DATABASE_URL", DEMO_DATABASE_URL)
    monkeypatch.setenv("CHATSITE_DEMO_CONNECTOR_URL", DEMO_CONNECTOR_URL)
    call_command("seed_demo_database")
    # As migration 0006 leaves it: read through the demo role, granted to no one in these tests.
    Connector.objects.update_or_create(name="demo", defaults={"url_env": "CHATSITE_DEMO_CONNECTOR_URL"})
    workflow, _ = Workflow.objects.get_or_create(owner=None, name="SQL analyst", defaults={"steps": seed.STEPS})
    return workflow


@pytest.fixture
def ask_my_documents(db) -> Workflow:
    """The seeded shared "Ask my documents" workflow (recreated: transactional tests empty the tables)."""
    import importlib

    seed = importlib.import_module("pipelines.migrations.0005_ask_my_documents")
    workflow, _ = Workflow.objects.get_or_create(owner=None, name="Ask my documents", defaults={"steps": seed.STEPS})
    return workflow
