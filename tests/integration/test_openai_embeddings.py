from __future__ import annotations

import base64
import math
import struct

import httpx
import pytest
from openai import OpenAI
from tokenizers import Tokenizer

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def test_embeddings_are_unit_vectors_in_order_and_deterministic(client: OpenAI) -> None:
    texts = ["hello world", "the quick brown fox", "hello world"]
    result = client.embeddings.create(model="demo-embed-gguf", input=texts)
    assert [d.index for d in result.data] == [0, 1, 2]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 64 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert result.usage.prompt_tokens > 0
    single = client.embeddings.create(model="demo-embed-gguf", input="hello world")
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


def test_base64_encoding_decodes_to_the_same_vector(client: OpenAI, server: ServerProcess) -> None:
    as_float = client.embeddings.create(model="demo-embed-gguf", input="hello", encoding_format="float")
    response = httpx.post(
        f"{server.base_url}/v1/embeddings",
        json={"model": "demo-embed-gguf", "input": "hello", "encoding_format": "base64"},
    )
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert decoded == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    # The client's default is base64, decoded on its side: the same numbers again.
    default = client.embeddings.create(model="demo-embed-gguf", input="hello")
    assert default.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)


def test_empty_input_is_400(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": "demo-embed-gguf", "input": []})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_token_id_inputs_embed_like_the_text_they_spell(
    client: OpenAI, server: ServerProcess, demo_tokenizer: Tokenizer
) -> None:
    # The demo embedding model adds no BOS, so its tokens for a text are exactly the tokenizer's.
    ids = demo_tokenizer.encode("hello world").ids
    text = client.embeddings.create(model="demo-embed-gguf", input="hello world", encoding_format="float")
    one = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": "demo-embed-gguf", "input": ids}).json()
    many = httpx.post(
        f"{server.base_url}/v1/embeddings", json={"model": "demo-embed-gguf", "input": [ids, ids[:1]]}
    ).json()
    assert one["data"][0]["embedding"] == pytest.approx(text.data[0].embedding, abs=1e-6)
    assert one["usage"]["prompt_tokens"] == len(ids)
    assert len(many["data"]) == 2 and many["data"][0]["embedding"] == pytest.approx(one["data"][0]["embedding"])
    assert many["data"][1]["embedding"] != pytest.approx(one["data"][0]["embedding"], abs=1e-3)


def test_token_ids_outside_the_vocabulary_are_400(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": "demo-embed-gguf", "input": [1, 10**6]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input" and "1000000" in error["message"]


def test_dimensions_shorten_and_renormalise(client: OpenAI) -> None:
    full = client.embeddings.create(model="demo-embed-gguf", input="hello", encoding_format="float")
    short = client.embeddings.create(model="demo-embed-gguf", input="hello", encoding_format="float", dimensions=8)
    vector = short.data[0].embedding
    assert len(vector) == 8 and math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    head = full.data[0].embedding[:8]
    norm = math.sqrt(sum(x * x for x in head))
    assert vector == pytest.approx([x / norm for x in head], abs=1e-5)
