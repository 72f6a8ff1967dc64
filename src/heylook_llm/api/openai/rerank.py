"""`POST /v1/rerank` (and `/rerank`): documents scored against a query by a reranker model.

The shape is the one llama-server, Jina and Cohere share: `model`, `query`, `documents` (strings, or objects
with `text`), `top_n`, `return_documents` (llama-server's `return_text` too); the answer lists `results` of
`{index, relevance_score, document?}` by falling score, with `model` and `usage`. Errors take OpenAI's envelope,
as every route under /v1/ does. docs/rerank.md.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from heylook_llm.api import limits
from heylook_llm.api.fields import Refused, check_fields, field_values
from heylook_llm.api.framing import OrjsonResponse
from heylook_llm.api.openai.dialect import OpenAIRoute
from heylook_llm.api.openai.schemas import error_schema
from heylook_llm.api.state import engine_of, field_log_of
from heylook_llm.errors import UnsupportedParameter


class RerankDocument(BaseModel):
    """A document as an object (Jina's and Cohere's form); only its text is ranked."""

    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "model": "demo-rerank-gguf",
                    "query": "which animal is quick?",
                    "documents": ["the lazy dog", "a llama on a hill"],
                    "top_n": 1,
                    "return_documents": True,
                }
            ]
        },
    )
    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, description="Texts, or objects with `text`")
    top_n: int | None = Field(default=None, ge=1, description="Return only the N best documents")
    return_documents: bool = Field(default=False, description="Give each result its document's text")
    return_text: bool | None = Field(default=None, description="llama-server's name for return_documents")

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


RERANK_REFUSED = (
    Refused("rank_fields", 'documents are ranked on their text; send each as a string or as {"text": ...}'),
    Refused("max_chunks_per_doc", "documents are not split into chunks; a document must fit the context window"),
    Refused("max_tokens_per_doc", "documents are not truncated; a document that does not fit is refused"),
    Refused("truncate", "documents are not truncated; a document that does not fit is refused"),
    Refused("truncation", "documents are not truncated; a document that does not fit is refused"),
    Refused("raw_scores", "scores are the model's own output (see docs/rerank.md)"),
    Refused("return_embeddings", "a reranker produces scores, not embeddings"),
    Refused("texts", "send the texts as documents"),
)

ERRORS: dict[int | str, dict[str, Any]] = {code: error_schema() for code in (400, 404, 500, 503)}
rerank_routes = APIRouter(tags=["Rerank"], responses=ERRORS, route_class=OpenAIRoute)


def _check_documents(body: RerankRequest) -> None:
    for index, document in enumerate(body.documents):
        if isinstance(document, RerankDocument) and document.model_extra:
            name = sorted(document.model_extra)[0]
            raise UnsupportedParameter(
                f"'documents[{index}].{name}' is not supported by this server: documents are ranked on their text",
                param=f"documents[{index}].{name}",
            )


@rerank_routes.post("/v1/rerank", summary="Rank documents against a query with a reranker model")
@rerank_routes.post("/rerank", summary="Rank documents against a query (llama-server's path)")
async def rerank(body: RerankRequest, request: Request) -> Response:
    field_log_of(request).note("rerank", check_fields(field_values(body), RERANK_REFUSED, RerankRequest.model_fields))
    _check_documents(body)
    engine = engine_of(request)
    texts = body.texts()
    limits.check_prompts(engine.settings.limits, len(texts), "documents")
    reranked = await engine.rerank(engine.resolve(body.model), body.query, texts)
    scores = reranked.result.scores
    # Best first; equal scores keep the documents' order.
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if body.top_n is not None:
        order = order[: body.top_n]
    with_text = body.return_documents or bool(body.return_text)
    results: list[dict[str, Any]] = []
    for index in order:
        item: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if with_text:
            item["document"] = {"text": texts[index]}
        results.append(item)
    tokens = reranked.result.prompt_tokens
    return OrjsonResponse(
        {
            "id": f"rerank-{uuid.uuid4().hex}",
            "object": "list",
            "model": body.model,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
