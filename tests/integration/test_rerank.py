"""POST /v1/rerank (and /rerank) on the demo reranker, over HTTP against a real server.

The demo reranker's weights are chosen (demo/rerank_gguf.py): a document scores 0.5 plus a rising function of
the share of "llama" tokens in its query-document prompt, so the ordering is known in advance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from heylook_llm.demo import RERANK_MARKER_WORD
from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "demo-rerank-gguf"
DOCUMENTS = [
    "the lazy dog sleeps in the sun",
    f"a quick brown {RERANK_MARKER_WORD} jumps over the dog",
    "hello world from a local model server",
    f"{RERANK_MARKER_WORD} {RERANK_MARKER_WORD} {RERANK_MARKER_WORD}",
]


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


def _rerank(http: httpx.Client, path: str = "/v1/rerank", **body: object) -> httpx.Response:
    return http.post(path, json={"model": MODEL, "query": "which animal is quick?", **body})


def test_documents_that_say_the_marker_word_rank_first_by_density(http: httpx.Client) -> None:
    response = _rerank(http, documents=DOCUMENTS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL
    assert body["object"] == "list"
    results = body["results"]
    # The densest "llama" document first, then the one that says it once; the two others tie at 0.5 and keep
    # their input order.
    assert [r["index"] for r in results] == [3, 1, 0, 2]
    scores = [r["relevance_score"] for r in results]
    assert scores[0] > scores[1] > 0.5
    assert scores[2] == pytest.approx(0.5) and scores[3] == pytest.approx(0.5)
    assert all("document" not in r for r in results)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4 * 10


def test_the_marker_word_counts_at_the_start_of_a_document(http: httpx.Client) -> None:
    results = _rerank(http, path="/rerank", documents=["dog", RERANK_MARKER_WORD]).json()["results"]
    assert [r["index"] for r in results] == [1, 0]
    assert results[0]["relevance_score"] > 0.5


def test_scores_do_not_depend_on_the_other_documents_or_the_path(http: httpx.Client) -> None:
    alone = _rerank(http, documents=[DOCUMENTS[1]]).json()["results"][0]["relevance_score"]
    together = _rerank(http, path="/rerank", documents=DOCUMENTS).json()["results"]
    assert {r["index"]: r["relevance_score"] for r in together}[1] == pytest.approx(alone, abs=1e-5)


def test_top_n_and_return_documents_with_object_documents(http: httpx.Client) -> None:
    response = _rerank(http, documents=[{"text": d} for d in DOCUMENTS], top_n=2, return_documents=True)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["document"]["text"]) for r in results] == [(3, DOCUMENTS[3]), (1, DOCUMENTS[1])]
    # llama-server's name for it.
    texts = _rerank(http, documents=DOCUMENTS, top_n=1, return_text=True).json()["results"]
    assert texts == [{"index": 3, "relevance_score": results[0]["relevance_score"], "document": {"text": DOCUMENTS[3]}}]


def test_many_documents_are_scored_in_packs_with_the_same_results(http: httpx.Client) -> None:
    # More documents than the model's sequences per pack (parallel: 4): several decodes, same scores.
    many = DOCUMENTS * 3
    results = _rerank(http, documents=many).json()["results"]
    by_index = {r["index"]: r["relevance_score"] for r in results}
    assert len(by_index) == len(many)
    for index, score in by_index.items():
        assert score == pytest.approx(by_index[index % len(DOCUMENTS)], abs=1e-5)


def _error(response: httpx.Response, status: int = 400) -> dict[str, object]:
    assert response.status_code == status, response.text
    error: dict[str, object] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("field", "value"),
    [("rank_fields", ["title"]), ("max_chunks_per_doc", 10), ("max_tokens_per_doc", 512), ("texts", ["a"])],
)
def test_fields_that_ask_for_unimplemented_behaviour_are_refused(http: httpx.Client, field: str, value: object) -> None:
    error = _error(_rerank(http, documents=DOCUMENTS, **{field: value}))
    assert error["param"] == field
    assert "not supported" in str(error["message"])


def test_bad_requests_name_the_field(http: httpx.Client) -> None:
    assert "documents" in str(_error(_rerank(http, documents=[])))
    assert "query" in str(_error(http.post("/v1/rerank", json={"model": MODEL, "documents": ["a"]})))
    assert "top_n" in str(_error(_rerank(http, documents=DOCUMENTS, top_n=0)))
    image = _error(_rerank(http, documents=[{"text": "a", "image": "http://example.invalid/a.png"}]))
    assert image["param"] == "documents[0].image"
    assert _error(_rerank(http, documents=["a"], model="no-such-model"), 404)["param"] == "model"


def test_a_document_longer_than_the_context_is_refused_by_index(http: httpx.Client) -> None:
    error = _error(_rerank(http, documents=["short", "llama " * 3000]))
    assert error["param"] == "documents[1]"
    assert "2048 tokens" in str(error["message"])


def test_a_chat_model_is_not_a_reranker(http: httpx.Client) -> None:
    error = _error(_rerank(http, documents=DOCUMENTS, model="demo-gguf"))
    assert error["param"] == "model"
    assert "not a reranker" in str(error["message"])


def test_the_reranker_neither_chats_nor_embeds(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "reranker" in chat.value.message
    with pytest.raises(openai.BadRequestError) as embed:
        client.embeddings.create(model=MODEL, input="hi")
    assert "reranker" in embed.value.message
    assert isinstance(embed.value.body, dict) and embed.value.body.get("param") == "model"


@pytest.fixture(scope="module")
def own_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("rerank")
    models = [
        {
            "id": "reranker",
            "provider": "llama_cpp",
            "config": {"model_path": str(demo_dir / "demo-rerank-gguf.gguf"), "rerank": True},
        },
        # A chat model whose file is gone: asking it to rerank must be refused before any load is tried.
        {"id": "chat-missing", "provider": "llama_cpp", "config": {"model_path": str(folder / "gone.gguf")}},
        # A chat GGUF marked as a reranker: its header does not ask for rank pooling.
        {
            "id": "chat-as-reranker",
            "provider": "llama_cpp",
            "config": {"model_path": str(demo_dir / "demo-gguf.gguf"), "rerank": True},
        },
    ]
    config = folder / "models.yaml"
    config.write_text(yaml.safe_dump({"default_model": "reranker", "models": models}))
    proc = start_server(folder, config)
    yield proc
    proc.stop()


def test_a_chat_model_is_refused_without_being_loaded(own_server: ServerProcess) -> None:
    response = httpx.post(
        f"{own_server.base_url}/v1/rerank", json={"model": "chat-missing", "query": "q", "documents": ["a"]}, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "unsupported_capability"


def test_a_gguf_without_rank_pooling_does_not_load_as_a_reranker(own_server: ServerProcess) -> None:
    response = httpx.post(
        f"{own_server.base_url}/v1/rerank",
        json={"model": "chat-as-reranker", "query": "q", "documents": ["a"]},
        timeout=60,
    )
    assert response.status_code == 500, response.text
    assert "is not a reranker: its GGUF header does not ask for rank pooling" in response.json()["error"]["message"]
    ok = httpx.post(
        f"{own_server.base_url}/v1/rerank", json={"model": "reranker", "query": "q", "documents": ["llama"]}, timeout=60
    )
    assert ok.status_code == 200 and ok.json()["results"][0]["relevance_score"] > 0.5
