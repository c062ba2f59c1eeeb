"""The catalog API with twin routes whose query parameters FastAPI and pydantic parse, for
`servecat perf api --compare-params`.

The real routes parse their query by hand (catalog.params); the twins under /fastapi answer the
same queries from the same catalog index, declared the FastAPI way: a pydantic model built from
the same Param list (types, defaults, bounds, unknown parameters refused), taken as
`Annotated[Model, Query()]`. One process serves both, so the paced latencies of the two differ
only by how the parameters are parsed.

    python -m cli.commands.perf_api_twin --store STORE --port PORT
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from catalog.params import CATALOG_PARAMS, RECOMMEND_PARAMS, Param

PREFIX = "/fastapi"
_TYPES = {"str": str, "int": int, "float": float}


def query_model(name: str, params: tuple[Param, ...]) -> type[BaseModel]:
    """A pydantic model with PARAMS' types, defaults and bounds; unknown fields are refused."""
    fields: dict[str, Any] = {}
    for p in params:
        typ = _TYPES[p.type]
        extra = {"allow_inf_nan": False} if p.type == "float" else {}
        fields[p.name] = (typ if p.required else typ | None,
                          Field(... if p.required else p.default, gt=p.gt, ge=p.ge, le=p.le,
                                description=p.description, **extra))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


CatalogQuery = query_model("CatalogQuery", CATALOG_PARAMS)
RecommendQuery = query_model("RecommendQuery", RECOMMEND_PARAMS)


def _json(payload: dict[str, Any], snapshot: str) -> Response:
    """As the real routes answer: orjson bytes and the snapshot header."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), 200,
                    headers={"X-Catalog-Snapshot": snapshot}, media_type="application/json")


def add_twins(app: FastAPI) -> None:
    """Add /fastapi/v1/catalog and /fastapi/v1/recommend to the catalog API APP."""
    from catalog.recommend_api import deployments_of

    holder = app.state.holder

    @app.get(PREFIX + "/v1/catalog")
    async def catalog(q: Annotated[CatalogQuery, Query()]) -> Response:  # type: ignore[valid-type]
        index = holder.require()
        return _json(index.catalog(**q.model_dump()), index.snapshot_id)

    @app.get(PREFIX + "/v1/recommend")
    async def recommend(q: Annotated[RecommendQuery, Query()]) -> Response:  # type: ignore[valid-type]
        index = holder.require()
        payload = deployments_of(index).recommend(**q.model_dump())
        return _json({"snapshot": index.snapshot_id, **payload}, index.snapshot_id)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from catalog.api import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--configs", default="configs")
    args = ap.parse_args(argv)
    app = create_app(args.store, configs_dir=Path(args.configs))
    add_twins(app)
    # As `servecat api` serves (cli/commands/api.py).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
