"""The operators' side: the admin console lists every model, message content is read-only there, and the
management commands that `make run` uses."""

import io

import pytest
from django.core.management import call_command
from django.test import Client

from chats.models import Message, User


@pytest.fixture
def staff_client(db) -> Client:
    admin = User.objects.create_superuser("root", "root@example.com", "x")
    client = Client()
    client.force_login(admin)
    return client


@pytest.mark.parametrize(
    "path", ["chats/user", "chats/chat", "chats/message", "pipelines/modelconfig", "pipelines/workflow"]
)
def test_every_model_has_an_admin_list_with_search(staff_client, alice_chat, path):
    response = staff_client.get(f"/admin/{path}/?q=alice")
    assert response.status_code == 200


def test_message_content_is_read_only_in_the_admin(staff_client, alice_chat):
    message = Message.objects.create(
        chat=alice_chat, role="user", content="original words", created_at=alice_chat.created_at
    )
    page = staff_client.get(f"/admin/chats/message/{message.id}/change/")
    assert page.status_code == 200
    assert 'name="content"' not in page.content.decode()
    staff_client.post(f"/admin/chats/message/{message.id}/change/", {"status": "completed", "content": "rewritten"})
    message.refresh_from_db()
    assert message.content == "original words"


def test_the_admin_needs_a_staff_login(alice_client):
    assert alice_client.get("/admin/chats/chat/").status_code == 302


def test_demo_user_is_created_once_with_its_password_printed(db):
    out = io.StringIO()
    call_command("ensure_demo_user", stdout=out)
    password = out.getvalue().split("password '")[1].split("'")[0]
    demo = User.objects.get(username="demo")
    assert demo.is_superuser and demo.check_password(password)
    again = io.StringIO()
    call_command("ensure_demo_user", stdout=again)
    assert again.getvalue() == "" and User.objects.count() == 1


def test_mode_command_says_embedded_and_why(settings):
    settings.CHATSITE_EMBEDDED, settings.CHATSITE_MODE_REASON = True, "no Redis answers at redis://127.0.0.1:1/0"
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("chatsite_mode", stdout=out)
    assert exit_info.value.code == 3
    assert "embedded mode (no Redis answers at redis://127.0.0.1:1/0)" in out.getvalue()


def test_mode_command_says_full_when_redis_answers():
    out = io.StringIO()
    call_command("chatsite_mode", stdout=out)
    assert out.getvalue().startswith("chatsite: full mode (Redis answers at")


def test_embedded_mode_is_chosen_when_no_redis_answers(monkeypatch):
    import chatsite.settings as chatsite_settings

    monkeypatch.setattr(chatsite_settings, "REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("CHATSITE_EMBEDDED", raising=False)
    embedded, reason = chatsite_settings._embedded_mode()
    assert embedded and reason.startswith("no Redis answers at redis://127.0.0.1:1/0")
    monkeypatch.setenv("CHATSITE_EMBEDDED", "0")
    assert chatsite_settings._embedded_mode() == (False, "CHATSITE_EMBEDDED=0")


def test_a_fresh_database_has_the_embedded_model(db):
    from pipelines.models import ModelConfig

    model = ModelConfig.objects.get(model_id="smollm2-135m")
    assert model.provider == "llama_cpp" and model.provider_model == "" and model.is_active
