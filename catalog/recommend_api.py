"""The deployment endpoints: `GET /v1/recommend` (deployments ranked at their operating points
for a model, profile and traffic, sized for a demand) and `GET /v1/curves` (a deployment's
measured load levels). `mount(app, holder)` adds them to the catalog API."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from catalog.errors import Unavailable
from catalog.index import CatalogIndex
from catalog.openapi import responses
from catalog.params import CURVES_PARAMS, RECOMMEND_PARAMS, openapi_parameters, parse_query
from catalog.recommend_query import REBUILD, DeploymentIndex


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
                         "under `unranked` with the reason. Load levels are never ranked.",
             openapi_extra=openapi_parameters(RECOMMEND_PARAMS),
             responses=responses("recommend", 404, 422, 503))
    async def recommend(request: Request) -> Response:
        args = parse_query(request.query_params, RECOMMEND_PARAMS)
        index = holder.require()
        return _json(deployments_of(index).recommend(**args), index)

    @app.get("/v1/curves", summary="A deployment's measured load levels, with p99 intervals",
             openapi_extra=openapi_parameters(CURVES_PARAMS),
             responses=responses("curves", 404, 422, 503))
    async def curves(request: Request) -> Response:
        args = parse_query(request.query_params, CURVES_PARAMS)
        index = holder.require()
        return _json(deployments_of(index).curves(**args), index)
