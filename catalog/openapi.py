"""What the catalog API tells OpenAPI about its answers: every status each endpoint can give,
the one error shape they share, and the shape of each 200 at the level a client relies on.

The endpoints build their JSON by hand (see catalog/api.py: it is the hot path), so these
declarations are the contract; tests/catalog/test_fuzz_api.py checks the answers against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every 4xx and 5xx: what was wrong, and the parameter or body field it is about."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="what was wrong and where, and what to do about it")
    parameter: str | None = Field(None, description="the query parameter, path parameter or "
                                                    "body field the error is about, if one")


WHY = {
    400: "malformed request (a Content-Length that is not a number)",
    401: "no API key, a wrong one, or the server has none configured",
    404: "a model, profile, deployment, length profile, filter value or request that the "
         "catalog does not have; `parameter` names which",
    410: "a cursor from an older catalog snapshot: start again without it",
    413: "request body over the size limit",
    422: "a parameter or body that is unknown, missing, malformed or out of range; "
         "`parameter` names which",
    503: "no catalog snapshot yet, or one built before this endpoint existed: the message says "
         "how to build it",
}
SNAPSHOT_HEADER = {"X-Catalog-Snapshot": {"description": "id of the catalog snapshot that "
                                                         "answered", "schema": {"type": "string"}}}
CHALLENGE_HEADER = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def obj(*required: str, **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object schema with REQUIRED keys (and PROPERTIES typed); other keys allowed."""
    return {"type": "object", "required": list(required), "properties": properties}


NUMBER = {"type": ["number", "null"]}
TEXT = {"type": ["string", "null"]}
ARRAY = {"type": "array", "items": {"type": "object"}}
OBJECT = {"type": "object"}
# Quality against the model's reference deployment; figures null where not measured.
QUALITY = obj("status", "reason", "reference", "kl", "agreement", "perplexity_ratio",
              status={"type": "string"}, reason=TEXT, reference=TEXT, kl=NUMBER,
              agreement=NUMBER, perplexity_ratio=NUMBER)

DEPLOYMENT_ITEM = obj(
    "rank", "deployment", "hardware", "gpu_count", "engine", "quantization", "capacity",
    "operating_point", "pareto", "p_first", "p_top3", "rank_note", "quality",
    rank={"type": "integer", "minimum": 1}, deployment={"type": "string"},
    capacity=obj("rps", "rps_lo", "rps_hi", "status", "lower_bound", "reason",
                 rps=NUMBER, rps_lo=NUMBER, rps_hi=NUMBER, lower_bound={"type": "boolean"}),
    operating_point=obj("output_tokens_per_s_per_gpu", "ttft_p99_ms", "tpot_p99_ms",
                        "cost_per_mtok_on_demand", "cost_per_mtok_spot"),
    p_first={"type": "number", "minimum": 0, "maximum": 1},
    p_top3={"type": "number", "minimum": 0, "maximum": 1}, quality=QUALITY,
    serving=obj("replicas", "gpus", "usd_per_hour_on_demand", "usd_per_hour_spot",
                "upper_bound"))
BODIES = {
    "health": obj("status", "snapshot", status={"type": "string"}),
    "models": obj("snapshot", "models", models=ARRAY),
    "profiles": obj("snapshot", "profiles", profiles=ARRAY),
    "hardware": obj("snapshot", "hardware", hardware=ARRAY),
    "catalog": obj("snapshot", "total", "limit", "next_cursor", "rows",
                   total={"type": "integer"}, next_cursor=TEXT, rows=ARRAY),
    "recommend": obj("snapshot", "model", "profile", "traffic", "slo", "demand_rps", "filters",
                     "ranked", "matching", "reason", "items", "unranked",
                     traffic=obj("lengths", "matched_by"), slo=OBJECT,
                     max_quality_loss=OBJECT, demand_rps=NUMBER,
                     ranked={"type": "integer"}, matching={"type": "integer"}, reason=TEXT,
                     items={"type": "array", "items": DEPLOYMENT_ITEM},
                     unranked={"type": "array", "items": obj("deployment", "capacity_status",
                                                             "reason", quality=QUALITY)}),
    "curves": obj("snapshot", "deployment", "model", "lengths",
                  lengths={"type": "array", "items": obj("lengths", "levels", "capacity",
                                                         levels=ARRAY, capacity=ARRAY)}),
    "pareto": obj("snapshot", "model", "profile", "criteria", "count", "items",
                  count={"type": "integer"}, items=ARRAY),
    "request": obj("id", "model", "status", "matrix_overrides", "reason", "requested_by",
                   "created_at", "updated_at", id={"type": "string"}, status={"type": "string"},
                   matrix_overrides=OBJECT, reason=TEXT, requested_by=TEXT),
}


def responses(body: str | None, *statuses: int, ok: int = 200,
              html: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: OK with BODIES[BODY] (or HTML), and each of STATUSES with
    the error shape (HTML pages answer errors as HTML too)."""
    if html:
        page = {"text/html": {"schema": {"type": "string"}}}
        out: dict[int | str, dict[str, Any]] = {ok: {"description": "the page", "content": page}}
        return out | {s: {"description": WHY[s], "content": page} for s in statuses}
    out = {ok: {"description": "OK", "headers": SNAPSHOT_HEADER,
                "content": {"application/json": {"schema": BODIES[body] if body else OBJECT}}}}
    for status in statuses:
        out[status] = {"description": WHY[status], "model": ErrorBody}
        if status == 401:
            out[status]["headers"] = CHALLENGE_HEADER
    return out
