"""The `openai` embedding provider against a real OpenAI-compatible `/v1/embeddings` endpoint: llama-cpp-python's
server with embeddings on, serving SmolLM2 (576 dimensions; it returns one vector per token, which the provider
mean-pools). Then a collection on that model, ingested and searched through the database."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from knowledge.embeddings import EmbeddingError, get_embedder
from knowledge.ingest import run_ingestion
from knowledge.models import Collection, Document, EmbeddingModel
from knowledge.retrieval import SourceConfig, retrieve
from tests.live import free_port
from tests.test_openai_provider import KEY_ENV, SERVER_KEY, WRONG_KEY, serve

pytestmark = pytest.mark.e2e

SMOLLM2_DIMENSIONS = 576


@pytest.fixture(scope="module")
def embeddings_url(tmp_path_factory) -> Iterator[str]:
    with serve(tmp_path_factory.mktemp("embeddings_server"), "--embedding", "true") as url:
        yield url


def config(url: str, dimensions: int = SMOLLM2_DIMENSIONS) -> EmbeddingModel:
    return EmbeddingModel(
        name="smollm2-embed", display_name="SmolLM2 embeddings", provider="openai", provider_model="smollm2",
        base_url=url, api_key_env=KEY_ENV, dimensions=dimensions,
    )  # fmt: skip


def test_texts_become_one_unit_vector_each(embeddings_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    texts = ["The ferry leaves at nine.", "Llamas eat grass.", "The boat departs at 9 in the morning."]
    vectors = get_embedder(config(embeddings_url)).embed(texts)
    assert vectors.shape == (3, SMOLLM2_DIMENSIONS) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_a_wrong_key_is_a_clear_error_that_is_not_retried(embeddings_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    with pytest.raises(EmbeddingError) as caught:
        get_embedder(config(embeddings_url)).embed(["hello"])
    assert caught.value.code == "embedding_failed" and not caught.value.retryable
    assert "401" in caught.value.message and WRONG_KEY not in caught.value.message


def test_an_unreachable_server_is_a_retryable_error(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    with pytest.raises(EmbeddingError) as caught:
        get_embedder(config(f"http://127.0.0.1:{free_port()}/v1")).embed(["hello"])
    assert caught.value.code == "embedding_unavailable" and caught.value.retryable


def test_a_model_that_returns_other_dimensions_than_configured_is_refused(embeddings_url, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    with pytest.raises(EmbeddingError) as caught:
        get_embedder(config(embeddings_url, dimensions=384)).embed(["hello"])
    assert caught.value.code == "embedding_dimensions" and "576" in caught.value.message


@pytest.mark.django_db
def test_a_collection_on_a_remote_embedding_model_is_ingested_and_searched_with_it(embeddings_url, monkeypatch, alice):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    model = config(embeddings_url)
    model.save()
    collection = Collection.objects.create(owner=alice, name="Remote", embedding_model=model)
    text = "# Harbour\n\nThe ferry to Skye leaves Mallaig at 9:15.\n\n# Farm\n\nLlamas eat grass and hay."
    document = Document.objects.create(
        collection=collection, title="notes.md", filename="notes.md", kind="markdown", size_bytes=len(text),
        sha256="r" * 64, data=text.encode(),
    )  # fmt: skip
    assert run_ingestion(str(document.id)) == "ready"
    assert set(document.chunks.values_list("dimensions", flat=True)) == {SMOLLM2_DIMENSIONS}
    found = retrieve(alice, "ferry to Skye", [SourceConfig(collection_id=str(collection.id), similarity_threshold=0)])
    assert found and found[0].hit.document_id == str(document.id)
