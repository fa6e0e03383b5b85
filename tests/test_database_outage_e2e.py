"""A database outage on the live stack (issue 17): the stack reaches PostgreSQL through a relay that goes down
(every connection closed, new ones refused) and comes back. Meanwhile requests get 503 `database_unavailable`
with Retry-After, never a 500, the SSE send too (before its stream starts); /healthz stays 200 and /readyz
names the database; afterwards the connection pools recover by themselves."""

import time

import pytest
from django.db import connection

from tests.conftest import E2E_PASSWORD
from tests.live import TcpProxy, login, new_chat, send, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def proxied_stack(django_db_setup, django_db_blocker, settings):
    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    proxy.up()
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@127.0.0.1:{proxy.port}/{db['NAME']}"
    # Requests wait at most 1 s for a connection (then 503), readiness checks as long.
    stack = start_stack(
        url,
        settings.REDIS_URL,
        extra_env={"DATABASE_POOL_TIMEOUT": "1", "CHATSITE_READY_TIMEOUT_SECONDS": "1"},
    )
    yield stack, proxy
    stack.stop()
    proxy.down()


def test_requests_during_a_database_outage_get_503_with_retry_after_and_the_pools_recover(
    proxied_stack, carol, scripted_model
):
    stack, proxy = proxied_stack
    client, token = login(stack.base_url, carol.username, E2E_PASSWORD)
    chat_id = new_chat(client, token)
    assert send(client, token, chat_id, carol).types[-1] == "end"

    proxy.down()
    listed = client.get("/api/chats")
    assert listed.status_code == 503, listed.text
    assert listed.json()["error"] == "database_unavailable"
    assert listed.json()["message"].startswith("The database is not answering")
    assert int(listed.headers["Retry-After"]) > 0
    streamed = send(client, token, chat_id, carol, content="during the outage")
    assert streamed.status == 503, streamed.body
    assert b"database_unavailable" in streamed.body and "Retry-After" in streamed.headers
    page = client.get(f"/c/{chat_id}")  # a page (not DRF): the middleware's answer
    assert page.status_code == 503 and page.json()["error"] == "database_unavailable"
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["ok"] is False and ready.json()["checks"]["redis"]["ok"] is True
    assert "Internal Server Error" not in stack.log("web")

    proxy.up()
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the pools did not recover"
        time.sleep(0.2)
    assert client.get("/api/chats").status_code == 200
    after = send(client, token, chat_id, carol, content="after the outage")
    assert after.types[-1] == "end", after.events
    assert after.text == "".join(scripted_model.options["script"])
