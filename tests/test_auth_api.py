"""The session auth API: CSRF cookie, login (CSRF enforced), logout, me; 401 JSON without a session."""

from rest_framework.test import APIClient

from tests.conftest import PASSWORD


def csrf_client() -> tuple[APIClient, str]:
    client = APIClient(enforce_csrf_checks=True)
    response = client.get("/api/auth/csrf")
    assert response.status_code == 200
    token = response.json()["csrfToken"]
    assert client.cookies["csrftoken"].value
    return client, token


def test_login_with_csrf_token_starts_a_session(alice):
    client, token = csrf_client()
    response = client.post(
        "/api/auth/login", {"username": "alice", "password": PASSWORD}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200
    assert response.json()["id"] == str(alice.id)
    assert response.json()["csrfToken"]
    me = client.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json() == {"id": str(alice.id), "username": "alice", "email": "alice@example.com", "isStaff": False}


def test_login_without_csrf_token_is_403_and_starts_no_session(alice):
    client, _ = csrf_client()
    response = client.post("/api/auth/login", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    assert client.get("/api/auth/me").status_code == 401


def test_login_with_a_wrong_password_is_400_with_a_clear_message(alice):
    client, token = csrf_client()
    response = client.post(
        "/api/auth/login", {"username": "alice", "password": "nope"}, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_credentials", "message": "The username or password is wrong."}
    assert client.get("/api/auth/me").status_code == 401


def test_login_with_missing_fields_names_them(db):
    client, token = csrf_client()
    response = client.post("/api/auth/login", {}, format="json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"username", "password"}


def test_me_without_a_session_is_401_json_not_a_redirect(anon):
    response = anon.get("/api/auth/me")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_authenticated"
    assert response.has_header("WWW-Authenticate")


def test_an_invalid_session_cookie_is_401(anon):
    anon.cookies["sessionid"] = "forged-session-key"
    assert anon.get("/api/auth/me").status_code == 401


def test_logout_ends_the_session(alice_client):
    assert alice_client.post("/api/auth/logout").status_code == 204
    assert alice_client.get("/api/auth/me").status_code == 401


def test_logout_without_csrf_token_is_403(alice_client):
    alice_client.credentials()
    assert alice_client.post("/api/auth/logout").status_code == 403
    assert alice_client.get("/api/auth/me").status_code == 200


def test_unknown_api_url_is_404_json(alice_client):
    response = alice_client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_schema_describes_the_stream_endpoint(anon):
    response = anon.get("/api/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/chats/{chat_id}/messages/stream" in schema["paths"]
