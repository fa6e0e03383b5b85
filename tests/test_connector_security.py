"""Issue 13, finding 1: no user may run SQL beyond the connectors granted to them, no connector runs as a role
that may do more than read, no query reaches server files, processes, settings or other databases, and no
error carries the database's own text.

Every way SQL reaches a connector is tried with the same hostile queries: a workflow's save (the API), an `sql`
step at run time (a row written straight into the database, as one saved before this fix would be), and the
`sql_query` tool (the scripted provider calls it). All on real PostgreSQL (the demo database and its read-only
role, made by `manage.py seed_demo_database`) and Redis; the last test goes through daphne and Celery.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import get_resolver
from psycopg import sql

from chats import actions
from chats.events import stream_key, sync_redis
from chats.models import Chat, Message
from pipelines import connectors
from pipelines.access import DEMO_DATA_GROUP, usable_connectors
from pipelines.connectors import ConnectorError, run_read_query
from pipelines.models import Connector, ModelConfig, Workflow
from pipelines.runner import run_reply
from tests.conftest import DEMO_CONNECTOR_URL, DEMO_DATABASE_URL
from tests.test_connectors import _server_url, create_reader, sample_database

# What a successful hostile query would have shown: file contents, directory listings, catalog rows, settings.
LEAKS = [
    "root:x:0:0", "/usr/sbin/nologin", "SCRAM-SHA-256", "md5", "template0", "template1", "fstab", "os-release",
    "PG_VERSION", "postgresql.conf", "pg_hba.conf", "/var/lib/postgresql", "chatsite_demo_reader",
]  # fmt: skip

HOSTILE = [
    # Server files, as the tester read /etc/passwd (the cast put the file's text into the error).
    "SELECT CAST(pg_read_file('/etc/passwd') AS int)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT PG_READ_FILE('/etc/passwd')",
    "SELECT pg_catalog.pg_read_file('/etc/passwd', 0, 200)",
    "SELECT \"pg_read_file\"('/etc/passwd')",
    "SELECT pg_read_file/**/('/etc/passwd')",
    "SELECT convert_from(pg_read_binary_file('/etc/passwd'), 'UTF8')",
    "SELECT pg_stat_file('/etc/passwd')",
    "SELECT U&\"pg_read\\005ffile\"('/etc/passwd')",
    # Directory listings, as a table function too.
    "SELECT * FROM pg_ls_dir('/etc')",
    "SELECT name FROM pg_catalog.pg_ls_waldir()",
    "SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_ls_dir('.'))",
    # Hidden in CTEs, subqueries and casts.
    "WITH f AS (SELECT pg_read_file('/etc/passwd') AS x) SELECT x FROM f",
    "SELECT x FROM (SELECT pg_read_file('/etc/passwd') AS x) AS sub",
    "SELECT product FROM sales WHERE product = (SELECT pg_read_file('/etc/passwd'))::text",
    "SELECT 1; SELECT pg_read_file('/etc/passwd')",
    # Large objects, other databases, SQL given as text.
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_get(lo_import('/etc/passwd'))",
    "SELECT * FROM dblink('dbname=postgres', 'SELECT rolpassword FROM pg_authid') AS t(p text)",
    "SELECT query_to_xml('SELECT * FROM pg_shadow', true, true, '')",
    "SELECT ts_stat('SELECT to_tsvector(rolpassword) FROM pg_authid')",
    # Signals, settings, roles, locks, transaction ids, sleeping past the timeout.
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT current_setting('data_directory')",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_notify('chatsite', 'x')",
    "SELECT txid_current()",
    "SELECT pg_sleep(1000)",
    "SELECT pg_sleep_for('1000 seconds')",
    # Server-level catalogs.
    "SELECT * FROM pg_shadow",
    "SELECT usename, passwd FROM pg_catalog.pg_shadow",
    'SELECT * FROM "pg_authid"',
    "SELECT datname FROM pg_database",
    "SELECT rolname FROM pg_roles",
    "SELECT name, setting FROM pg_settings",
    "SELECT * FROM pg_hba_file_rules",
    "SELECT (SELECT count(*) FROM pg_user) AS n",
]


def events_of(message: Message) -> list[dict]:
    return [json.loads(f["data"]) for _, f in sync_redis().xrange(stream_key(str(message.id)))]


def assert_nothing_leaked(*blobs: object) -> None:
    text = json.dumps(blobs, default=str)
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} reached the client: {text[:2000]}"


def reply_to(chat: Chat, model: ModelConfig, workflow: Workflow, content: str = "How much tea?") -> Message:
    _, reply, _ = actions.do_send_message(chat.owner, chat, content=content, model=model, workflow=workflow)
    run_reply(str(reply.id))
    reply.refresh_from_db()
    return reply


def saved(reply: Message) -> dict:
    return {"content": reply.content, "error": reply.error, "toolCalls": reply.tool_calls}


@pytest.fixture
def demo(db, monkeypatch) -> Connector:
    """The demo connector as migration 0006 leaves it (read through the demo role), its database seeded."""
    monkeypatch.setenv("CHATSITE_DEMO_DATABASE_URL", DEMO_DATABASE_URL)
    monkeypatch.setenv("CHATSITE_DEMO_CONNECTOR_URL", DEMO_CONNECTOR_URL)
    call_command("seed_demo_database")
    connector, _ = Connector.objects.update_or_create(
        name="demo", defaults={"url_env": "CHATSITE_DEMO_CONNECTOR_URL", "is_active": True}
    )
    return connector


@pytest.fixture
def alice_demo(demo, alice) -> Connector:
    demo.users.add(alice)
    return demo


@pytest.fixture
def tool_model(scripted_model) -> ModelConfig:
    scripted_model.options = {"script": ["Done."]}
    scripted_model.save()
    return scripted_model


def calling_sql_query(model: ModelConfig, connector: str, query: str) -> ModelConfig:
    model.options = {
        "script": ["Done."],
        "tool_rounds": [[{"name": "sql_query", "arguments": {"connector": connector, "query": query}}]],
    }
    model.save()
    return model


def tool_workflow(owner) -> Workflow:
    return Workflow.objects.create(owner=owner, name="SQL tool", steps=[{"type": "generate", "tools": ["sql_query"]}])


def sql_workflow(owner, query: str, connector: str = "demo") -> Workflow:
    """A workflow row written straight to the database: no validation, as one saved before this fix."""
    return Workflow.objects.create(
        owner=owner,
        name="Raw SQL",
        steps=[{"type": "sql", "connector": connector, "query": query}, {"type": "generate"}],
    )


# --- hostile queries, through every way SQL reaches a connector ---------------------------------------------


@pytest.mark.parametrize("query", HOSTILE)
def test_a_hostile_query_is_refused_when_a_workflow_is_saved(alice_client, alice_demo, query):
    steps = [{"type": "sql", "connector": "demo", "query": query}, {"type": "generate"}]
    response = alice_client.post("/api/workflows", {"name": "Hostile", "steps": steps}, format="json")

    assert response.status_code == 400, response.content
    assert any(m.startswith("Step 1 (sql): query:") for m in response.json()["fields"]["steps"])
    assert not Workflow.objects.filter(name="Hostile").exists()
    assert_nothing_leaked(response.json())


@pytest.mark.parametrize("query", HOSTILE)
def test_a_hostile_sql_step_saved_before_the_fix_is_refused_when_it_runs(
    alice, alice_chat, alice_demo, tool_model, query
):
    reply = reply_to(alice_chat, tool_model, sql_workflow(alice, query))
    evs = events_of(reply)

    assert evs[-1]["type"] == "error" and evs[-1]["error"] == "sql_rejected", evs[-1]
    assert evs[-1]["retryable"] is False and evs[-1]["message"]
    assert reply.status == "failed" and reply.error["code"] == "sql_rejected"
    assert_nothing_leaked(evs, saved(reply))


@pytest.mark.parametrize("query", HOSTILE)
def test_a_hostile_query_through_the_sql_query_tool_is_refused(alice, alice_chat, alice_demo, tool_model, query):
    reply = reply_to(alice_chat, calling_sql_query(tool_model, "demo", query), tool_workflow(alice))
    evs = events_of(reply)
    result = next(e for e in evs if e["type"] == "tool_result")

    assert result["result"] is None and result["error"], result
    assert reply.status == "completed" and reply.tool_calls[0]["error"] == result["error"]
    assert_nothing_leaked([e for e in evs if e["type"] != "tool_call"], reply.content, reply.error)
    assert_nothing_leaked(result, reply.tool_calls[0]["error"])


# --- the second guard: the demo role itself cannot reach the server ------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "SELECT CAST(pg_read_file('/etc/passwd') AS int)",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT passwd FROM pg_shadow",
        "SELECT rolpassword FROM pg_authid",
        "SELECT lo_import('/etc/passwd')",
        "SELECT current_setting('data_directory')",
    ],
)
def test_the_demo_role_cannot_read_the_server_even_with_the_parser_switched_off(demo, monkeypatch, query):
    monkeypatch.setattr(connectors, "check_read_query", lambda text, **limits: text)
    with pytest.raises(ConnectorError) as caught:
        run_read_query(demo, query)

    assert caught.value.code == "sql_error"
    assert "the connector's role may not read that (SQLSTATE 42501)" in caught.value.message
    assert_nothing_leaked(caught.value.message)


def test_the_demo_role_cannot_signal_another_roles_backend_even_with_the_parser_switched_off(demo, monkeypatch):
    monkeypatch.setattr(connectors, "check_read_query", lambda text, **limits: text)
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        (pid,) = admin.execute("SELECT pg_backend_pid()").fetchone()
        with pytest.raises(ConnectorError) as caught:
            run_read_query(demo, f"SELECT pg_terminate_backend({pid})")
        assert caught.value.code == "sql_error" and "42501" in caught.value.message
        assert admin.execute("SELECT 1").fetchone() == (1,)  # still connected


def test_the_demo_role_may_only_connect_and_select(demo):
    reader = DEMO_CONNECTOR_URL
    with psycopg.connect(reader, autocommit=True) as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, rolbypassrls, "
            "(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) FROM pg_roles r "
            "WHERE rolname = current_user"
        ).fetchone()
        assert attributes == (False, False, False, False, False, False, 0)
        assert conn.execute("SELECT count(*) FROM sales").fetchone() == (120,)
        for statement in ("CREATE TABLE x (i int)", "CREATE TEMP TABLE x (i int)", "DELETE FROM sales"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# --- the connector's role is checked before every query ------------------------------------------------------


@pytest.fixture(scope="module")
def sample_url() -> Iterator[str]:
    with sample_database() as url:
        yield url


@pytest.fixture
def role_factory(sample_url) -> Iterator:
    """Make roles on the sample database (`make(*attributes, member_of=[roles])` -> URL); drop them after."""
    database = sample_url.rpartition("/")[2]
    made: list[str] = []
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:

        def make(*attributes: str, member_of: tuple[str, ...] = ()) -> str:
            role = f"chatsite_t_{uuid.uuid4().hex[:10]}"
            made.append(role)
            create_reader(admin, role, database, *attributes)
            for granted in member_of:
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(role)))
            return _server_url(database, role)

        def middle(of: str) -> str:
            """A NOLOGIN role that is a member of `of`: membership through it is indirect."""
            role = f"chatsite_t_{uuid.uuid4().hex[:10]}"
            made.append(role)
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(sql.Identifier(role)))
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(of), sql.Identifier(role)))
            return role

        make.middle = middle
        yield make
        for role in reversed(made):
            # DROP OWNED revokes its privileges, on the sample database too (a shared object).
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("setup", "logged"),
    [
        (lambda make: _server_url(DEMO_DATABASE_URL.rpartition("/")[2]), "is a superuser"),
        (lambda make: make("SUPERUSER"), "is a superuser"),
        (lambda make: make(member_of=("pg_read_server_files",)), "is a member of pg_read_server_files"),
        (lambda make: make(member_of=("pg_write_server_files",)), "is a member of pg_write_server_files"),
        (lambda make: make(member_of=("pg_execute_server_program",)), "is a member of pg_execute_server_program"),
        (lambda make: make(member_of=(make.middle("pg_signal_backend"),)), "is a member of pg_signal_backend"),
        (lambda make: make("CREATEROLE"), "may create roles (CREATEROLE)"),
        (lambda make: make("REPLICATION"), "may replicate (REPLICATION)"),
        (lambda make: make("BYPASSRLS"), "bypasses row-level security (BYPASSRLS)"),
    ],
    ids=["admin-url", "superuser", "read-files", "write-files", "programs", "signal-indirect", "createrole",
         "replication", "bypassrls"],
)  # fmt: skip
def test_a_connector_whose_role_may_do_more_than_read_refuses_to_run(role_factory, monkeypatch, caplog, setup, logged):
    monkeypatch.setenv("CHATSITE_TEST_ROLE_URL", setup(role_factory))
    connector = Connector(name="risky", url_env="CHATSITE_TEST_ROLE_URL")
    with pytest.raises(ConnectorError) as caught:
        run_read_query(connector, "SELECT 1")

    assert caught.value.code == "connector_misconfigured"
    assert caught.value.message == (
        "The connector 'risky' is misconfigured, so it was not used: an administrator must fix it."
    )
    # The operator learns exactly what is wrong; the client does not.
    assert logged in caplog.text and "CHATSITE_TEST_ROLE_URL" in caplog.text
    assert logged not in caught.value.message


def test_a_role_that_may_only_read_runs(role_factory, monkeypatch):
    monkeypatch.setenv("CHATSITE_TEST_ROLE_URL", role_factory())
    result = run_read_query(Connector(name="fine", url_env="CHATSITE_TEST_ROLE_URL"), "SELECT 1 AS one")
    assert result["rows"] == [[1]]


def test_a_misconfigured_demo_connector_fails_the_step_with_a_sentence(
    alice, alice_chat, alice_demo, tool_model, monkeypatch
):
    # The Makefile's old default: the demo connector reading as the superuser.
    monkeypatch.setenv("CHATSITE_DEMO_CONNECTOR_URL", DEMO_DATABASE_URL)
    reply = reply_to(alice_chat, tool_model, sql_workflow(alice, "SELECT count(*) FROM sales"))
    error = events_of(reply)[-1]

    assert error["type"] == "error" and error["error"] == "connector_misconfigured"
    assert "an administrator must fix it" in error["message"] and error["retryable"] is False
    assert "superuser" not in error["message"]


# --- grants: who may use which connector ---------------------------------------------------------------------


def test_bob_without_a_grant_cannot_save_a_workflow_naming_the_demo_connector(bob_client, demo):
    def refused(connector: str) -> list[str]:
        steps = [{"type": "sql", "connector": connector, "query": "SELECT count(*) FROM sales"}, {"type": "generate"}]
        response = bob_client.post("/api/workflows", {"name": "Mine", "steps": steps}, format="json")
        assert response.status_code == 400, response.content
        return response.json()["fields"]["steps"]

    # An ungranted connector reads exactly as a missing one.
    assert refused("demo") == [m.replace("nowhere", "demo") for m in refused("nowhere")]
    assert refused("demo") == ["Step 1 (sql): connector: no active connector named 'demo' that this workflow may use."]


def test_bob_without_a_grant_cannot_reach_the_demo_connector_through_the_tool(bob, bob_chat, demo, tool_model):
    def error_for(connector: str) -> str:
        reply = reply_to(bob_chat, calling_sql_query(tool_model, connector, "SELECT count(*) FROM sales"), workflow)
        return next(e for e in events_of(reply) if e["type"] == "tool_result")["error"]

    workflow = tool_workflow(bob)
    assert error_for("demo") == (
        "There is no active connector named 'demo' that you may use. Available connectors: none."
    )
    assert error_for("demo") == error_for("nowhere").replace("nowhere", "demo")


def test_bobs_sql_step_written_straight_to_the_database_is_refused_at_run_time(bob, bob_chat, demo, tool_model):
    reply = reply_to(bob_chat, tool_model, sql_workflow(bob, "SELECT count(*) FROM sales"))
    missing = reply_to(bob_chat, tool_model, sql_workflow(bob, "SELECT 1", connector="nowhere"))

    assert reply.error["code"] == "connector_unavailable"
    assert reply.error["message"] == "The connector 'demo' is not available."
    assert missing.error["message"] == "The connector 'nowhere' is not available."


def test_alice_with_a_grant_runs_a_benign_query_with_the_tool_and_a_step(alice, alice_chat, alice_demo, tool_model):
    query = "SELECT product, COUNT(*) AS n FROM sales GROUP BY product ORDER BY product"
    reply = reply_to(alice_chat, calling_sql_query(tool_model, "demo", query), tool_workflow(alice))
    result = next(e for e in events_of(reply) if e["type"] == "tool_result")
    assert result["result"]["rows"] == [["Cocoa", 30], ["Coffee", 30], ["Juice", 30], ["Tea", 30]]

    reply = reply_to(alice_chat, tool_model, sql_workflow(alice, query))
    finished = [e for e in events_of(reply) if e["type"] == "step" and e["step"] == "sql"]
    assert finished[-1]["state"] == "finished" and finished[-1]["rowCount"] == 4


def test_a_grant_through_a_group_counts_and_revoking_it_stops_the_next_run(alice, alice_chat, demo, tool_model):
    group = Group.objects.create(name="analysts")
    demo.groups.add(group)
    alice.groups.add(group)
    assert list(usable_connectors(alice)) == [demo]
    workflow = sql_workflow(alice, "SELECT count(*) AS n FROM sales")
    assert reply_to(alice_chat, tool_model, workflow).status == "completed"

    alice.groups.remove(group)
    reply = reply_to(alice_chat, tool_model, workflow)
    assert reply.status == "failed" and reply.error["code"] == "connector_unavailable"


def test_inactive_connectors_and_users_are_usable_by_no_one(alice, alice_demo):
    assert list(usable_connectors(alice)) == [alice_demo]
    alice.is_active = False
    assert list(usable_connectors(alice)) == []
    alice.is_active = True
    alice_demo.is_active = False
    alice_demo.save()
    assert list(usable_connectors(alice)) == []


def test_the_tool_lists_only_the_users_own_connectors(alice, alice_chat, alice_demo, tool_model):
    Connector.objects.create(name="payroll", url_env="PAYROLL_DB_URL")  # granted to no one
    reply = reply_to(alice_chat, calling_sql_query(tool_model, "payroll", "SELECT 1"), tool_workflow(alice))
    error = next(e for e in events_of(reply) if e["type"] == "tool_result")["error"]

    assert error == "There is no active connector named 'payroll' that you may use. Available connectors: demo."


def test_a_shared_workflows_fixed_query_runs_for_everyone_but_its_tool_only_reaches_the_users_grants(
    alice, bob, alice_chat, bob_chat, alice_demo, tool_model, sql_analyst
):
    # The seeded SQL analyst: its staff-written step reads the demo database for bob, who has no grant.
    reply = reply_to(bob_chat, tool_model, sql_analyst)
    sql_done = [e for e in events_of(reply) if e["type"] == "step" and e["step"] == "sql"]
    assert reply.status == "completed" and sql_done[-1]["state"] == "finished" and sql_done[-1]["rowCount"] == 16

    # A shared workflow offering the tool: alice (granted) reads, bob (not granted) does not.
    shared = Workflow.objects.create(
        owner=None, name="Shared tool", steps=[{"type": "generate", "tools": ["sql_query"]}]
    )
    calling_sql_query(tool_model, "demo", "SELECT count(*) AS n FROM sales")
    alice_result = next(e for e in events_of(reply_to(alice_chat, tool_model, shared)) if e["type"] == "tool_result")
    bob_result = next(e for e in events_of(reply_to(bob_chat, tool_model, shared)) if e["type"] == "tool_result")
    assert alice_result["result"]["rows"] == [[120]]
    assert bob_result["result"] is None and "that you may use" in bob_result["error"]


def test_staff_may_save_a_shared_workflow_on_any_active_connector_but_a_user_may_not_patch_it(
    demo, alice_client, shared_workflow
):
    from tests.conftest import logged_in_client

    steps = [{"type": "sql", "connector": "demo", "query": "SELECT count(*) FROM sales"}, {"type": "generate"}]
    assert (
        alice_client.patch(f"/api/workflows/{shared_workflow.id}", {"steps": steps}, format="json").status_code == 403
    )
    from chats.models import User

    staff = User.objects.create_user("staff", "staff@example.com", "x", is_staff=True)
    response = logged_in_client(staff).patch(f"/api/workflows/{shared_workflow.id}", {"steps": steps}, format="json")
    assert response.status_code == 200, response.content


# --- the demo connector's default grant, the admin, and the API ----------------------------------------------


def test_migration_0006_points_the_demo_connector_at_its_role_and_grants_it_to_the_demo_group(db):
    Connector.objects.filter(name="demo").delete()
    Group.objects.filter(name=DEMO_DATA_GROUP).delete()
    legacy = Connector.objects.create(name="demo", url_env="CHATSITE_DEMO_DATABASE_URL")
    importlib.import_module("pipelines.migrations.0006_connector_grants").grant_demo(django_apps, None)

    legacy.refresh_from_db()
    assert legacy.url_env == "CHATSITE_DEMO_CONNECTOR_URL"
    assert [g.name for g in legacy.groups.all()] == [DEMO_DATA_GROUP] and not legacy.users.exists()


def test_the_demo_user_is_granted_the_demo_connector_and_nobody_else_is(demo):
    from chats.models import User

    User.objects.all().delete()  # ensure_demo_user acts on a fresh install only
    demo.groups.add(Group.objects.get_or_create(name=DEMO_DATA_GROUP)[0])
    call_command("ensure_demo_user")
    demo_user = User.objects.get(username="demo")
    other = User.objects.create_user("someone")

    assert list(usable_connectors(demo_user)) == [demo]
    assert list(usable_connectors(other)) == []


def test_no_api_route_exposes_connectors(alice_client):
    def routes(resolver, prefix=""):
        for pattern in resolver.url_patterns:
            if hasattr(pattern, "url_patterns"):
                yield from routes(pattern, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    assert not [r for r in routes(get_resolver()) if "connector" in r and not r.startswith("admin/")]
    assert alice_client.get("/api/connectors").status_code == 404


def test_staff_grant_connectors_in_the_admin_and_other_users_cannot_open_it(alice, bob, alice_client, demo):
    from tests.conftest import logged_in_client

    assert alice_client.get("/admin/pipelines/connector/").status_code == 302  # to the admin's login
    from chats.models import User

    root = User.objects.create_superuser("root", "root@example.com", "x")
    admin = logged_in_client(root)
    group = Group.objects.create(name="analysts")
    page = admin.get(f"/admin/pipelines/connector/{demo.id}/change/")
    assert page.status_code == 200 and b'name="users"' in page.content and b'name="groups"' in page.content
    response = admin.post(
        f"/admin/pipelines/connector/{demo.id}/change/",
        {
            "name": "demo", "description": "", "url_env": "CHATSITE_DEMO_CONNECTOR_URL",
            "statement_timeout_ms": 5000, "max_rows": 200, "users": [str(alice.id)], "groups": [group.id],
            "is_active": "on",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    assert list(usable_connectors(alice)) == [demo] and list(usable_connectors(bob)) == []
    bob.groups.add(group)
    assert list(usable_connectors(bob)) == [demo]


# --- through the real stack: daphne, Celery, Redis -----------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_hostile_sql_step_ends_in_an_error_event_with_a_code_and_a_sentence_only(
    session, carol, demo, scripted_model
):
    from tests.live import new_chat, read_sse

    demo.users.add(carol)
    client, token = session
    for query, code in [
        ("SELECT CAST(pg_read_file('/etc/passwd') AS int)", "sql_rejected"),
        # Past the parser, the database refuses and its message would quote the value: it must not arrive.
        ("SELECT CAST(product || ':x:0:0:root:/root:/bin/bash' AS int) FROM sales", "sql_error"),
    ]:
        workflow = sql_workflow(carol, query)
        chat_id = new_chat(client, token)
        body = {"content": "Hi", "modelId": "scripted", "userId": str(carol.id), "workflowId": str(workflow.id)}
        received = read_sse(client, "POST", f"/api/chats/{chat_id}/messages/stream", token=token, json=body)

        error = received.events[-1]
        assert error["type"] == "error" and error["error"] == code, received.events
        assert set(error) == {"type", "error", "message", "retryable"} and error["message"].endswith(".")
        listed = client.get(f"/api/chats/{chat_id}/messages").json()["results"]
        assert_nothing_leaked(received.events, listed)
        assert "x:0:0" not in json.dumps([received.events, listed])
