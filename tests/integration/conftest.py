from __future__ import annotations

import pytest
from openai import OpenAI
from tokenizers import Tokenizer

from heylook_llm.demo import ModelShape, train_tokenizer
from tests.support.server import ServerProcess

# Every chat behaviour is checked on each backend's demo model.
CHAT_MODELS = ["demo-gguf", "demo-mlx"]


@pytest.fixture(params=CHAT_MODELS)
def chat_model(request: pytest.FixtureRequest) -> str:
    model: str = request.param
    return model


@pytest.fixture()
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def demo_tokenizer() -> Tokenizer:
    """The demo models' tokenizer (deterministically trained, the same one written into the GGUF)."""
    return Tokenizer.from_str(train_tokenizer(ModelShape().vocab).tokenizer_json)
