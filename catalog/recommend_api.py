"""The deployment endpoints: `GET /v1/recommend` (deployments ranked at their operating points
for a model, profile and traffic, sized for a demand) and `GET /v1/curves` (a deployment's
measured load levels). `mount(app, holder)` adds them to the catalog API."""

from __future__ import annotations

import copy
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from catalog.errors import Unavailable
from catalog.estimate_points import ESTIMATES_PARAM, MODES
from catalog.index import CatalogIndex
from catalog.openapi import BODIES, DEPLOYMENT_ITEM, NUMBER, QUALITY, TEXT, obj, responses
from catalog.params import CURVES_PARAMS, RECOMMEND_PARAMS, openapi_parameters, parse_query
from catalog.recommend_query import REBUILD, DeploymentIndex

RECOMMEND_QUERY = (*RECOMMEND_PARAMS, ESTIMATES_PARAM)
# The marking rule, told to OpenAPI readers where they look: the list of items.
MARKED = ("Measured deployments first, in rank order (`source: measured`); with "
          "`estimates=include`, estimated-only deployments after every one of them "
          "(`source: estimate`, `rank: null`, each figure with its 95% interval as `_lo`/`_hi`): "
          "an estimate never takes a measured deployment's place. `rank_if_measured` says where "
          "its point estimate would rank; `might_beat_top` whether its optimistic bounds beat "
          "the top pick.")
ESTIMATE_ITEM = obj(
    "source", "rank", "rank_if_measured", "might_beat_top", "deployment", "hardware",
    "gpu_count", "engine", "quantization", "capacity", "operating_point", "rank_note", "quality",
    source={"const": "estimate"}, rank={"type": "null"},
    rank_if_measured={"type": ["integer", "null"], "minimum": 1},
    might_beat_top={"type": "boolean"}, deployment={"type": "string"},
    capacity=obj("rps", "rps_lo", "rps_hi", "status", "lower_bound", rps=NUMBER, rps_lo=NUMBER,
                 rps_hi=NUMBER, status={"const": "estimated"}, lower_bound={"const": False}),
    operating_point=obj(*(f"{m}{s}" for m in ("output_tokens_per_s_per_gpu", "ttft_p99_ms",
                                               "tpot_p99_ms", "cost_per_mtok_on_demand")
                          for s in ("", "_lo", "_hi")), "cost_per_mtok_spot"),
    quality=QUALITY, serving=obj("replicas", "gpus", "usd_per_hour_on_demand",
                                 "usd_per_hour_spot", "upper_bound"))
MEASURED_ITEM = {**DEPLOYMENT_ITEM, "required": ["source", *DEPLOYMENT_ITEM["required"]],
                 "properties": {"source": {"const": "measured"},
                                **DEPLOYMENT_ITEM["properties"]}}
ESTIMATES_SUMMARY = {**obj(
    "included", "available", "matching", "might_beat_top", "listed", "reason",
    included={"type": "boolean"}, available={"type": "boolean"},
    matching={"type": "integer", "minimum": 0, "description": "estimated-only deployments "
              "matching the query, its filters and limits"},
    might_beat_top={"type": "integer", "minimum": 0, "description": "of those, the ones that "
                    "might beat the top pick: at the optimistic end of every 95% interval at "
                    "once (capacity and throughput high, p99s low, cost at the high throughput), "
                    "scored by TOPSIS under the profile's weights with the ranked measured "
                    "deployments, above the top pick; all of them when nothing measured is "
                    "listed"},
    listed={"type": "integer", "minimum": 0}, reason=TEXT),
    "description": "Deployments with an estimate but no measurement on this traffic and "
                   "profile; `available` false (and `reason`) when the store has no estimates"}


def recommend_body() -> dict[str, Any]:
    """The /v1/recommend answer's schema: the measured one with the estimates marked."""
    body = copy.deepcopy(BODIES["recommend"])
    body["required"].append("estimates")
    body["properties"]["items"] = {"type": "array", "description": MARKED,
                                   "items": {"anyOf": [MEASURED_ITEM, ESTIMATE_ITEM]}}
    body["properties"]["estimates"] = ESTIMATES_SUMMARY
    return body


def recommend_parameters() -> dict[str, Any]:
    out = openapi_parameters(RECOMMEND_QUERY)
    for p in out["parameters"]:
        if p["name"] == ESTIMATES_PARAM.name:
            p["schema"]["enum"] = list(MODES)
    return out


class Holder(Protocol):
    def require(self) -> CatalogIndex: ...


def deployments_of(index: CatalogIndex) -> DeploymentIndex:
    """The snapshot's deployment table; 503 saying how to rebuild when it was built without one."""
    if index.deployments is None:
        raise Unavailable(f"catalog snapshot {index.snapshot_id} was built before deployments "
                          f"were ranked at their operating points and has no deployment table; "
                          f"{REBUILD}")
    return index.deployments


def _json(payload: dict[str, Any], index: CatalogIndex) -> Response:
    body = {"snapshot": index.snapshot_id, **payload}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), 200,
                    headers={"X-Catalog-Snapshot": index.snapshot_id},
                    media_type="application/json")


def _responses() -> dict[int | str, dict[str, Any]]:
    out = responses("recommend", 404, 422, 503)
    out[200]["content"]["application/json"]["schema"] = recommend_body()
    return out


def mount(app: FastAPI, holder: Holder) -> None:
    """Add /v1/recommend and /v1/curves to APP, answering from HOLDER's snapshot."""

    @app.get("/v1/recommend", summary="Deployments ranked at their operating points, sized "
                                      "for a demand",
             description="For a model, a profile (SLOs + weights) and your traffic (`lengths`, or "
                         "`input_tokens` + `output_tokens` for the nearest measured length "
                         "profile): each deployment's capacity under the SLOs with its interval, "
                         "the operating point there (throughput, p99s, cost), its TOPSIS rank, "
                         "P(#1), P(top 3) and Pareto flag; with `demand_rps` the replicas, GPUs "
                         "and $/hour that serve it. Deployments without capacity are listed "
                         "under `unranked` with the reason. Load levels are never ranked. "
                         "Estimated-only deployments are counted (`estimates`), and listed "
                         "after the measured ones, marked, with `estimates=include`.",
             openapi_extra=recommend_parameters(), responses=_responses())
    async def recommend(request: Request) -> Response:
        args = parse_query(request.query_params, RECOMMEND_QUERY)
        index = holder.require()
        return _json(deployments_of(index).recommend(**args), index)

    @app.get("/v1/curves", summary="A deployment's measured load levels, with p99 intervals",
             openapi_extra=openapi_parameters(CURVES_PARAMS),
             responses=responses("curves", 404, 422, 503))
    async def curves(request: Request) -> Response:
        args = parse_query(request.query_params, CURVES_PARAMS)
        index = holder.require()
        return _json(deployments_of(index).curves(**args), index)
