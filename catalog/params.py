"""Query parameters declared once: parsed by hand on the hot path and described to OpenAPI from
the same list.

Why by hand: `servecat perf api --compare-params` serves the same Params as FastAPI/pydantic
query parameters (a pydantic model, `Annotated[Model, Query()]`) beside these routes. On the
1M-row catalog at 200 req/s paced, FastAPI's took +0.27-0.32 ms of API CPU per request (1.05 ->
1.32 and 1.23 -> 1.55 ms, +26%), and on this shared 2-core host that pushed the paced p95 from
158-169 ms to 1740-1810 ms (two runs, load avg 7-14).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from catalog.errors import InvalidParameter


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: its type ("str" | "int" | "float"), default, and bounds."""

    name: str
    type: str = "str"
    required: bool = False
    default: Any = None
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    description: str = ""

    def parse(self, raw: str) -> Any:
        if self.type == "str":
            return raw
        try:
            value = int(raw) if self.type == "int" else float(raw)
        except ValueError:
            kind = "an integer" if self.type == "int" else "a number"
            raise InvalidParameter(f"invalid parameter {self.name}: {raw[:40]!r} is not {kind}",
                                   self.name) from None
        if not math.isfinite(value):
            raise InvalidParameter(f"invalid parameter {self.name}: must be a finite number",
                                   self.name)
        for bound, ok, words in ((self.gt, lambda b: value > b, "greater than"),
                                 (self.ge, lambda b: value >= b, "at least"),
                                 (self.le, lambda b: value <= b, "at most")):
            if bound is not None and not ok(bound):
                raise InvalidParameter(f"invalid parameter {self.name}: must be {words} "
                                       f"{bound:g}, got {raw[:40]}", self.name)
        return value

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": {"str": "string", "int": "integer",
                                           "float": "number"}[self.type]}
        for key, bound in (("exclusiveMinimum", self.gt), ("minimum", self.ge),
                           ("maximum", self.le), ("default", self.default)):
            if bound is not None:
                schema[key] = bound
        return {"name": self.name, "in": "query", "required": self.required,
                "description": self.description, "schema": schema}


def parse_query(query: Mapping[str, str], params: tuple[Param, ...]) -> dict[str, Any]:
    """Values for PARAMS from QUERY; 422 naming the parameter that is unknown, missing or bad."""
    known = {p.name for p in params}
    unknown = sorted(set(query) - known)
    if unknown:
        raise InvalidParameter(f"unknown parameter(s) {', '.join(unknown)}; this endpoint takes "
                               f"{', '.join(sorted(known)) or 'none'}", unknown[0])
    out = {}
    for p in params:  # a handful of parameters per endpoint
        raw = query.get(p.name)
        if raw is None:
            if p.required:
                raise InvalidParameter(f"missing parameter {p.name}", p.name)
            out[p.name] = p.default
        else:
            out[p.name] = p.parse(raw)
    return out


def openapi_parameters(params: tuple[Param, ...]) -> dict[str, Any]:
    return {"parameters": [p.openapi() for p in params]}


# Upper bounds far past any real fleet: they keep replica counts and echoed filters within what
# JSON encoders accept (a demand of 1e300 req/s asked for a 300-digit replica count).
MAX_TOKENS = 10_000_000
MAX_DEMAND_RPS = 1e9
MAX_GPUS = 10_000_000
MAX_USD_PER_HOUR = 1e9

CATALOG_PARAMS = (
    Param("model", description="model id, exactly as in /v1/models"),
    Param("profile", description="only this profile's rows"),
    Param("hardware", description="hardware type (h100) or name (h100x2)"),
    Param("engine"),
    Param("quantization"),
    Param("sort", default="rank", description="a column to sort by; prefix - for descending"),
    Param("limit", "int", default=50, ge=1, le=1000),
    Param("cursor", description="next_cursor of the previous page"),
)
RECOMMEND_PARAMS = (
    Param("model", required=True, description="model id, exactly as in /v1/models"),
    Param("profile", required=True, description="profile name, as in /v1/profiles"),
    Param("lengths", description="length profile of your traffic (e.g. chat); or give "
                                 "input_tokens and output_tokens instead"),
    Param("input_tokens", "float", gt=0, le=MAX_TOKENS,
          description="mean prompt tokens of your traffic: the nearest measured length profile "
                      "answers"),
    Param("output_tokens", "float", gt=0, le=MAX_TOKENS,
          description="mean output tokens of your traffic"),
    Param("demand_rps", "float", gt=0, le=MAX_DEMAND_RPS,
          description="your traffic in requests/s: sizes replicas, GPUs and $/hour per "
                      "deployment"),
    Param("hardware", description="hardware type (h100) or name (h100x2)"),
    Param("engine"),
    Param("quantization"),
    Param("max_gpus", "int", ge=1, le=MAX_GPUS,
          description="GPUs in all (replicas × GPUs per replica)"),
    Param("max_usd_per_hour", "float", gt=0, le=MAX_USD_PER_HOUR,
          description="on-demand $/hour in all"),
    Param("max_kl", "float", ge=0,
          description="highest mean KL (nats per position) against the model's reference "
                      "deployment; deployments without a quality figure are left out"),
    Param("min_agreement", "float", ge=0, le=1,
          description="lowest share of greedy tokens equal to the reference deployment's; "
                      "deployments without a quality figure are left out"),
    Param("limit", "int", default=50, ge=1, le=1000),
)
CURVES_PARAMS = (
    Param("deployment", required=True, description="deployment key, as in /v1/recommend"),
    Param("lengths", description="one length profile (default: every one measured)"),
)
PARETO_PARAMS = (
    Param("model", required=True, description="model id, exactly as in /v1/models"),
    Param("profile", required=True, description="profile name (for its ranks)"),
)
# The HTML page takes what /v1/recommend takes, every one optional: it fills in defaults.
PAGE_PARAMS = tuple(replace(p, required=False) for p in RECOMMEND_PARAMS if p.name != "limit")
