"""Extract the OpenAI response schemas that tests/integration/test_openai_wire_spec.py validates against.

OpenAI's published OpenAPI document (openai/openai-openapi, `openapi.json`, 3.4 MB) is not part of this repository.
This script takes the component schemas the server's responses are checked against plus the closure of their
`$ref`s, and writes them to tests/data/openai_schemas.json (with the upstream MIT licence next to it):

    python -m tests.support.extract_openai_schemas [SPEC] [OUT]

SPEC defaults to ../shared/peer-material/openai-openapi/openapi.json beside the repository. Two rewrites, so that
the result is plain JSON Schema 2020-12:

- the OpenAPI 3.0 keyword `nullable: true`, still on many schemas of the 3.1 document and ignored by JSON Schema,
  becomes a type union with "null" (or `anyOf [..., {"type": "null"}]` where the schema has no single type);
- annotations that do not take part in validation (description, title, examples, `x-*` extensions) are dropped;
- draft 2019-09's `$recursiveRef: "#"` (two filter schemas) becomes a `$ref` to the schema it sits in, and its
  `$recursiveAnchor` is dropped.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_DIR = REPO_ROOT.parent / "shared" / "peer-material" / "openai-openapi"
DEFAULT_SPEC = PEER_DIR / "openapi.json"
DATA_FILE = REPO_ROOT / "tests" / "data" / "openai_schemas.json"
LICENSE_FILE = REPO_ROOT / "tests" / "data" / "OPENAI_OPENAPI_LICENSE"

UPSTREAM_REPO = "openai/openai-openapi"
UPSTREAM_COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
REF_PREFIX = "#/components/schemas/"

RESPONSE_EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
    "error": "ResponseErrorEvent",
}
"""The Responses stream events the server sends, by event type, with the schema of each."""

ROOT_SCHEMAS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "Embedding",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    # The Responses API (tests/integration/test_openai_responses.py): the response, its items and usage, and each
    # stream event the server sends (the members of ResponseStreamEvent, named one by one).
    "Response",
    "OutputItem",
    "ResponseUsage",
    *RESPONSE_EVENT_SCHEMAS.values(),
)
"""The schemas the wire-spec test names; the rest of the file is what these refer to."""

ANNOTATIONS = frozenset({"description", "title", "example", "examples"})
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SCHEMA_VALUES = frozenset(
    {
        "items",
        "additionalProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "contentSchema",
    }
)


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (without `nullable`) that also accepts null."""
    kind = schema.get("type")
    if isinstance(kind, str) and "$ref" not in schema:
        schema["type"] = [kind, "null"]
        if "enum" in schema and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if isinstance(kind, list) and "$ref" not in schema and "enum" not in schema:
        schema["type"] = [*kind, "null"] if "null" not in kind else kind
        return schema
    # A $ref, a composition or no type at all: keep it whole as one branch.
    return {"anyOf": [schema, {"type": "null"}]}


def clean_schema(schema: Any) -> Any:
    """Drop annotations, recurse into subschemas, and rewrite `nullable` into JSON Schema."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ANNOTATIONS or key.startswith("x-") or key in ("nullable", "$recursiveAnchor"):
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [clean_schema(sub) for sub in value]
        elif key in SCHEMA_VALUES:
            out[key] = clean_schema(value)
        else:
            out[key] = value
    return _allow_null(out) if schema.get("nullable") is True else out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith(REF_PREFIX):
                    raise ValueError(f"unexpected $ref {value!r}")
                found.add(value.removeprefix(REF_PREFIX))
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _refs(item, found)


def _recursive_refs(node: Any, name: str) -> Any:
    """`$recursiveRef: "#"` as a `$ref` to component `name`, which it means once the component stands alone."""
    if isinstance(node, dict):
        return {
            ("$ref" if key == "$recursiveRef" else key): (
                f"{REF_PREFIX}{name}" if key == "$recursiveRef" and value == "#" else _recursive_refs(value, name)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_recursive_refs(item, name) for item in node]
    return node


def extract(spec: dict[str, Any], roots: Sequence[str] = ROOT_SCHEMAS) -> dict[str, Any]:
    """The data file's content: `roots` and every schema they reach through `$ref`, cleaned."""
    components: dict[str, Any] = spec["components"]["schemas"]
    schemas: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in schemas:
            continue
        schemas[name] = _recursive_refs(clean_schema(components[name]), name)
        found: set[str] = set()
        _refs(schemas[name], found)
        todo.extend(sorted(found - schemas.keys()))
    return {
        "note": (
            f"Component schemas extracted from OpenAI's OpenAPI document ({UPSTREAM_REPO}, openapi.json, "
            f"commit {UPSTREAM_COMMIT}), MIT licence (see OPENAI_OPENAPI_LICENSE). Only the schemas named in "
            "`roots` and the closure of their $refs; `nullable: true` rewritten to a union with null, annotations "
            "dropped. Regenerate with `python -m tests.support.extract_openai_schemas`."
        ),
        "source": {
            "repository": UPSTREAM_REPO,
            "path": "openapi.json",
            "commit": UPSTREAM_COMMIT,
            "license": "MIT",
            "openapi": spec.get("openapi"),
            "info_version": spec.get("info", {}).get("version"),
        },
        "roots": sorted(roots),
        "components": {"schemas": schemas},
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec_path = Path(args[0]) if args else DEFAULT_SPEC
    out_path = Path(args[1]) if len(args) > 1 else DATA_FILE
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(extract(spec)), encoding="utf-8")
    licence = spec_path.parent / "LICENSE"
    if licence.is_file():
        shutil.copyfile(licence, out_path.parent / LICENSE_FILE.name)
    sys.stdout.write(f"{out_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
