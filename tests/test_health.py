"""Liveness and readiness (issue 17): /healthz touches nothing, /readyz times each check and says which failed;
both answer anyone, are never throttled, and a failing probe does not log a line per request at ERROR."""

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

REFUSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a real refusal


def test_healthz_answers_without_any_query_or_session(django_assert_num_queries):
    client = Client()
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "sessionid" not in response.cookies
    assert "no-cache" in response["Cache-Control"]


def test_readyz_reports_each_check_with_its_time():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "broker"}
    for check in body["checks"].values():
        assert check["ok"] is True
        assert isinstance(check["ms"], float) and check["ms"] >= 0


def test_readyz_is_503_naming_redis_when_redis_refuses(settings, caplog):
    settings.REDIS_URL = REFUSED
    with caplog.at_level(logging.INFO):
        first = Client().get("/readyz")
        second = Client().get("/readyz")
    assert first.status_code == second.status_code == 503
    body = first.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["error"] == "ConnectionError"
    assert body["checks"]["database"]["ok"] is True
    assert first["Retry-After"] == "5"
    # One WARNING when readiness changes, not an ERROR line per probe.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if "NOT ready" in r.getMessage()]) <= 1


def test_readyz_is_503_naming_the_broker_when_the_broker_refuses(monkeypatch):
    from chatsite.celery import app

    monkeypatch.setattr(app.conf, "broker_url", REFUSED)
    response = Client().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False and checks["redis"]["ok"] is True
    assert checks["broker"]["ms"] < 5000  # one try, not kombu's retries


def test_probes_are_never_rate_limited_and_need_no_login(settings):
    settings.CHATSITE_SEND_RATE = "1/min"
    client = Client()
    statuses = {client.get(path).status_code for path in ("/healthz", "/readyz") for _ in range(20)}
    assert statuses == {200}


def test_probes_take_get_only():
    response = Client().post("/readyz")
    assert response.status_code == 405
