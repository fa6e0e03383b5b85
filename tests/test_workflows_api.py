"""The workflows API: own and shared workflows; other users' private ones are 403, unknown ids 404."""

import uuid

import pytest

from pipelines.models import Workflow


def test_list_shows_own_and_shared_but_not_other_users(alice_client, alice, shared_workflow, bob_workflow):
    own = Workflow.objects.create(owner=alice, name="Alice's", system_prompt="Hi")
    response = alice_client.get("/api/workflows")
    assert response.status_code == 200
    found = {w["id"]: w for w in response.json()["results"]}
    assert {str(own.id), str(shared_workflow.id)} <= set(found) and str(bob_workflow.id) not in found
    assert all(w["shared"] or w["id"] == str(own.id) for w in found.values())
    assert found[str(shared_workflow.id)]["shared"] is True and found[str(own.id)]["shared"] is False


def test_create_is_private_to_the_caller(alice_client, alice, scripted_model):
    body = {"name": "Terse", "systemPrompt": "Answer in one line.", "modelId": "scripted", "temperature": 0.2}
    response = alice_client.post("/api/workflows", body, format="json")
    assert response.status_code == 201, response.content
    workflow = Workflow.objects.get(id=response.json()["id"])
    assert workflow.owner == alice and workflow.model == scripted_model and workflow.temperature == 0.2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "x", "temperature": 3}, "temperature"),
        ({"name": "x", "modelId": "gpt-99"}, "modelId"),
        ({"name": "x", "maxTokens": 0}, "maxTokens"),
        ({"name": "x" * 201}, "name"),
    ],
)
def test_bad_workflows_are_400_with_the_field_named_and_nothing_saved(alice_client, body, field):
    before = Workflow.objects.count()
    response = alice_client.post("/api/workflows", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert Workflow.objects.count() == before


def test_owner_updates_and_deletes(alice_client, alice):
    workflow = Workflow.objects.create(owner=alice, name="Old")
    response = alice_client.patch(f"/api/workflows/{workflow.id}", {"name": "New"}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "New"
    assert alice_client.delete(f"/api/workflows/{workflow.id}").status_code == 204
    assert not Workflow.objects.filter(id=workflow.id).exists()


def test_a_shared_workflow_is_readable_but_only_staff_change_it(alice_client, alice, shared_workflow):
    assert alice_client.get(f"/api/workflows/{shared_workflow.id}").status_code == 200
    assert (
        alice_client.patch(f"/api/workflows/{shared_workflow.id}", {"name": "Mine"}, format="json").status_code == 403
    )
    assert alice_client.delete(f"/api/workflows/{shared_workflow.id}").status_code == 403
    shared_workflow.refresh_from_db()
    assert shared_workflow.name == "Shared"
    alice.is_staff = True
    alice.save()
    assert (
        alice_client.patch(f"/api/workflows/{shared_workflow.id}", {"name": "Renamed"}, format="json").status_code
        == 200
    )


@pytest.mark.parametrize(("method", "data"), [("get", None), ("patch", {"name": "stolen"}), ("delete", None)])
def test_another_users_private_workflow_is_403(alice_client, bob_workflow, method, data):
    response = getattr(alice_client, method)(f"/api/workflows/{bob_workflow.id}", data, format="json")
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    assert "terse" not in response.content.decode().lower()
    bob_workflow.refresh_from_db()
    assert bob_workflow.name == "Bob's private workflow"


@pytest.mark.parametrize("workflow_id", [uuid.uuid4(), "nope"])
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_workflow_is_404(alice_client, method, workflow_id):
    assert getattr(alice_client, method)(f"/api/workflows/{workflow_id}", {}, format="json").status_code == 404


@pytest.mark.parametrize(("method", "path"), [("get", "/api/workflows"), ("post", "/api/workflows")])
def test_anonymous_is_401(anon, method, path):
    assert getattr(anon, method)(path, {}, format="json").status_code == 401


def test_anonymous_is_401_on_a_workflow(anon, shared_workflow):
    for method in ("get", "patch", "delete"):
        assert getattr(anon, method)(f"/api/workflows/{shared_workflow.id}", {}, format="json").status_code == 401


def test_a_null_character_in_a_model_id_is_400_not_a_server_error(alice_client):
    # Found by the fuzzer: PostgreSQL text cannot hold NUL, and the lookup used to fail with a 500.
    response = alice_client.post("/api/workflows", {"name": "x", "modelId": "gpt\x00"}, format="json")
    assert response.status_code == 400 and "modelId" in response.json()["fields"]
