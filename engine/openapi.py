"""What the inference server's OpenAPI document says: request bodies and every status answered.

The handlers read raw bodies (so size limits and parsing happen off the event loop), so FastAPI
cannot infer the bodies: they are declared here from the same pydantic models the handlers
validate with, and the errors in OpenAI's shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "integer", "null"]}}}},
}
WHY = {400: "the request is malformed or cannot be served (OpenAI error)",
       401: "missing or invalid API key", 404: "unknown model or route",
       405: "method not allowed", 413: "request body too large",
       429: "too many requests waiting", 499: "the client went away",
       500: "the engine failed this request", 503: "the engine is not running"}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for STATUSES, each with the OpenAI error body."""
    return {s: {"description": WHY[s], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/OpenAIError"}}}} for s in statuses}


def generation_doc(model: type[BaseModel], stream: bool = True) -> dict[str, Any]:
    """Route kwargs for a generation endpoint: its body, a JSON or SSE 200, and its errors."""
    content: dict[str, Any] = {"application/json": {}}
    if stream:
        content["text/event-stream"] = {}
    return {
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF.format(model=model.__name__)}}}}},
        "responses": {200: {"description": "the completion (SSE chunks when `stream`)",
                            "content": content},
                      **error_responses(400, 401, 404, 413, 429, 499, 500, 503)},
    }


def with_components(schema: dict[str, Any], *models: type[BaseModel]) -> dict[str, Any]:
    """SCHEMA (FastAPI's document) plus the request models and the error body as components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["OpenAIError"] = ERROR_SCHEMA
    for model in models:
        body = model.model_json_schema(ref_template=REF)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    return schema
