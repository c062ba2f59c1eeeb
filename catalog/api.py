"""The catalog query API (FastAPI): serves the newest snapshot under a store root, read-only,
plus durable benchmark requests. `create_app(store)` builds it; `servecat api` runs it.

Snapshot swaps are atomic: a background thread loads a new snapshot into a fresh CatalogIndex and
then replaces one reference; each request reads that reference once, so it sees one snapshot.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bench.request_spec import RequestError, check_model, check_request, public_reason
from bench.spec import shown
from catalog.benchmark_requests import BenchmarkRequest, BenchmarkRequests
from catalog.config import ConfigError, load_hardware, load_profiles
from catalog.docs import mount_docs
from catalog.errors import NotFound, QueryError
from catalog.estimate_points import EstimatesHolder
from catalog.index import CatalogIndex
from catalog.openapi import BODIES, responses
from catalog.page import PAGE_QUERY, answer_page, message_page, mount_assets
from catalog.params import (
    CATALOG_PARAMS,
    PARETO_PARAMS,
    Param,
    openapi_parameters,
    parse_query,
)
from catalog.recommend_api import mount as mount_recommend
from catalog.recommend_query import REBUILD
from catalog.snapshots import HOW_TO_BUILD, load_snapshot, read_pointer

log = logging.getLogger("servecat.api")

API_KEYS_ENV = "SERVECAT_API_KEYS"
MAX_BODY_BYTES = 64 * 1024
KEY_LABEL = "key-sha256:"  # requested_by: a fingerprint of the caller's key, never the key


class BenchmarkRequestIn(BaseModel):
    """Ask for MODEL (a Hugging Face id or a local path) to be benchmarked."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=1000, description="HF id or local path")
    matrix_overrides: dict[str, Any] = Field(default_factory=dict,
                                             description="matrix spec fields to override")

    @field_validator("model")
    @classmethod
    def _safe_model(cls, model: str) -> str:
        try:
            check_model(model)
        except RequestError as exc:
            raise ValueError(exc.message) from None
        return model.strip()


def key_label(key: str) -> str:
    """A short, non-reversible label for an API key: who asked, without storing the key."""
    return KEY_LABEL + hashlib.sha256(key.encode()).hexdigest()[:12]


def _request_json(req: BenchmarkRequest, status: int = 200) -> Response:
    """REQ as JSON; a `requested_by` stored before labels (a key's first characters) is hidden,
    and a row orjson cannot encode (an integer past 64 bits) still answers."""
    body = req.to_dict()
    if not str(body.get("requested_by") or "").startswith(KEY_LABEL):
        body["requested_by"] = None
    try:
        return _json(body, status)
    except TypeError:
        return Response(json.dumps(body, default=str), status, media_type="application/json")


class CatalogHolder:
    """The CatalogIndex in use, replaced whole when the store's pointer names a new snapshot."""

    def __init__(self, root: str | Path, poll_s: float = 1.0):
        self.root, self.poll_s = root, poll_s
        self.index: CatalogIndex | None = None
        self.loaded_at: str | None = None
        self.last_error: str | None = None
        self.estimates = EstimatesHolder(root)  # its own file: reloaded apart from snapshots
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the pointer's snapshot if it is not the one in use; True when it swapped."""
        self.estimates.refresh()
        pointer = read_pointer(self.root)
        current = self.index
        if pointer is None or (current is not None and current.snapshot_id == pointer["snapshot"]):
            return False
        index = CatalogIndex(load_snapshot(self.root, pointer["key"]), self.estimates)
        self.index, self.loaded_at = index, datetime.now(UTC).isoformat()  # the atomic swap
        log.info("serving catalog snapshot %s (%d rows)", index.snapshot_id, index.n)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # keep serving the old snapshot; report it in /healthz
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("catalog reload failed: %s", self.last_error)

    def start(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        self._thread = threading.Thread(target=self._poll, name="catalog-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def require(self) -> CatalogIndex:
        index = self.index
        if index is None:
            raise HTTPException(503, f"no catalog snapshot under {str(self.root).rstrip('/')}/catalog "
                                     f"yet; {HOW_TO_BUILD}")
        return index


def _dumps(payload: Any) -> bytes:
    """JSON bytes; orjson (NaN becomes null) is ~5× faster than json on catalog pages."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _json(payload: Any, status: int = 200, snapshot: str | None = None) -> Response:
    headers = {"X-Catalog-Snapshot": snapshot} if snapshot else None
    return Response(_dumps(payload), status, headers=headers, media_type="application/json")


def _error(status: int, message: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if param:
        body["parameter"] = param
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


class BodyLimit:
    """ASGI middleware: 413 for bodies over MAX_BYTES, by Content-Length or while streaming."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        too_big = f"request body over the {self.max_bytes}-byte limit"
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status, msg = (413, too_big) if length.isdigit() else (400, "bad Content-Length")
            return await _send_error(send, status, msg)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_big)
            return message

        await self.app(scope, limited, send)


class ServerTiming:
    """ASGI middleware: a `Server-Timing: app;dur=<ms>` header with the time spent inside the
    app, so a load test can tell the API's own time from queueing and scheduling delays."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def timed(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", f"app;dur={ms:.3f}".encode())]
            await send(message)

        await self.app(scope, receive, timed)


async def _send_error(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _check_params(request: Request, allowed: set[str]) -> None:
    parse_query(request.query_params, tuple(Param(name) for name in sorted(allowed)))


def create_app(store: str | Path, *, configs_dir: str | Path = "configs", poll_s: float = 1.0,
               max_body_bytes: int = MAX_BODY_BYTES,
               api_keys: list[str] | None = None) -> FastAPI:
    """The API over the catalog snapshots and benchmark requests under STORE.

    API keys come from API_KEYS, else from the SERVECAT_API_KEYS environment variable
    (comma-separated), read on each POST. /v1/profiles and /v1/hardware fall back to the YAML
    files in CONFIGS_DIR before a catalog exists.
    """
    holder = CatalogHolder(store, poll_s)
    requests_store = BenchmarkRequests(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder.start()
        yield
        holder.stop()

    # FastAPI's built-in OpenTelemetry hooks run on every request; nothing here exports traces.
    no_telemetry = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    app = FastAPI(title="servecat catalog API", lifespan=lifespan, telemetry=no_telemetry,
                  docs_url=None, redoc_url=None,  # mount_docs serves /docs from local files
                  description="LLM serving deployments ranked at their operating points per "
                              "model, traffic and profile, sized for a demand; the measured "
                              "curves and the raw per-config rows underneath. Every error "
                              "answers `{\"error\": ..., \"parameter\": ...}`.")
    app.state.holder = holder
    app.state.requests = requests_store
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ServerTiming)
    mount_docs(app)
    mount_assets(app)

    @app.exception_handler(QueryError)
    async def query_error(_: Request, exc: QueryError) -> Response:
        return _error(exc.status, exc.message, exc.param)

    # Starlette's class, not FastAPI's subclass: unknown routes (404) and methods (405) too.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code in (404, 405):  # the router's own: say what was asked and where to look
            message = (f"{message}: {request.method} {shown(request.url.path)}; the API's routes "
                       f"are listed at /docs")
        return _error(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        parts = [f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors]
        param = str(errors[0]["loc"][-1]) if errors else None
        return _error(422, "invalid parameter " + "; ".join(parts), param)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.get("/healthz", summary="Liveness and the catalog snapshot in use",
             responses={**responses("health"), 503: {
                 "description": "no catalog snapshot loaded yet: `hint` says how to build one",
                 "content": {"application/json": {"schema": BODIES["health"]}}}})
    async def healthz() -> Response:
        index = holder.index
        if index is None:
            return _json({"status": "no catalog", "snapshot": None, "error": holder.last_error,
                          "hint": HOW_TO_BUILD}, 503)
        return _json({"status": "ok", "snapshot": index.snapshot_id, "created_at": index.created_at,
                      "loaded_at": holder.loaded_at, "rows": index.n, "models": len(index.model_names),
                      "reload_error": holder.last_error}, snapshot=index.snapshot_id)

    @app.get("/v1/models", summary="Models in the catalog with their config counts",
             responses=responses("models", 422, 503))
    async def models(request: Request) -> Response:
        _check_params(request, set())
        index = holder.require()
        return _json({"snapshot": index.snapshot_id, "models": index.model_summary},
                     snapshot=index.snapshot_id)

    def _from_configs(kind: str) -> list[dict[str, Any]]:
        try:
            if kind == "profiles":
                return [p.to_dict() for p in load_profiles(Path(configs_dir) / "profiles.yaml")]
            return [h.to_dict() for h in load_hardware(Path(configs_dir) / "hardware.yaml")]
        except ConfigError as exc:
            raise HTTPException(503, f"no catalog yet and {exc}; {HOW_TO_BUILD}") from None

    @app.get("/v1/profiles", summary="Profiles: SLOs and TOPSIS weights",
             responses=responses("profiles", 422, 503))
    async def profiles(request: Request) -> Response:
        _check_params(request, set())
        index = holder.index
        if index is not None and index.profiles:
            return _json({"snapshot": index.snapshot_id, "profiles": list(index.profiles.values())})
        return _json({"snapshot": None, "profiles": _from_configs("profiles")})

    @app.get("/v1/hardware", summary="Hardware types with on-demand and spot $/GPU-hour",
             responses=responses("hardware", 422, 503))
    async def hardware(request: Request) -> Response:
        _check_params(request, set())
        index = holder.index
        if index is not None and index.hardware_info:
            return _json({"snapshot": index.snapshot_id, "hardware": index.hardware_info})
        return _json({"snapshot": None, "hardware": _from_configs("hardware")})

    @app.get("/v1/catalog", summary="Catalog rows (one per config × profile), paginated",
             description="Rows sorted by `sort`, `limit` per page; pass `next_cursor` back as "
                         "`cursor` with the same other parameters for the next page. A cursor "
                         "from an older catalog snapshot answers 410: start again without it.",
             openapi_extra=openapi_parameters(CATALOG_PARAMS),
             responses=responses("catalog", 404, 410, 422, 503))
    async def catalog(request: Request) -> Response:
        args = parse_query(request.query_params, CATALOG_PARAMS)
        index = holder.require()
        return _json(index.catalog(**args), snapshot=index.snapshot_id)

    mount_recommend(app, holder)  # /v1/recommend and /v1/curves: deployments, not configs

    @app.get("/v1/pareto", summary="The Pareto front of a model (throughput/GPU, p99s, cost)",
             openapi_extra=openapi_parameters(PARETO_PARAMS),
             responses=responses("pareto", 404, 422, 503))
    async def pareto(request: Request) -> Response:
        args = parse_query(request.query_params, PARETO_PARAMS)
        index = holder.require()
        return _json(index.pareto(**args), snapshot=index.snapshot_id)

    def _authorize(request: Request) -> str:
        keys = api_keys if api_keys is not None else [
            k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
        auth = request.headers.get("authorization", "")
        given = request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        challenge = {"WWW-Authenticate": "Bearer"}
        if not keys:
            raise HTTPException(401, f"benchmark requests are disabled: the server has no API keys "
                                     f"(set {API_KEYS_ENV})", challenge)
        if not given:
            raise HTTPException(401, f"missing API key: send 'Authorization: Bearer KEY' or "
                                     f"'X-API-Key: KEY' with a key from {API_KEYS_ENV}", challenge)
        # Compare against every key (no early exit), each in constant time.
        if not sum(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
            raise HTTPException(401, f"wrong API key (not one of {API_KEYS_ENV})", challenge)
        return key_label(given)

    @app.post("/v1/benchmark-requests", status_code=201,
              summary="Ask for a model to be benchmarked (API key required)",
              responses=responses("request", 400, 401, 413, 422, ok=201),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": BenchmarkRequestIn.model_json_schema()}}}})
    async def create_request(request: Request) -> Response:
        who = _authorize(request)
        raw = await request.body()
        try:
            body = BenchmarkRequestIn.model_validate_json(raw)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(x) for x in e['loc']) or 'body'}: "
                     f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
            return _error(422, "invalid body " + "; ".join(parts), "body")
        try:  # the matrix the sensor would build: schema, no server files, size cap
            await run_in_threadpool(check_request, body.model, body.matrix_overrides)
            created = await run_in_threadpool(requests_store.create, body.model,
                                              body.matrix_overrides, who)
        except RequestError as exc:
            return _error(422, "invalid body " + public_reason(str(exc)), exc.field)
        except ValueError as exc:
            return _error(422, f"invalid body {exc}", "body")
        return _request_json(created, 201)

    @app.get("/v1/benchmark-requests/{request_id}",
             summary="A benchmark request and its status (API key required)",
             responses=responses("request", 401, 404, 422))
    async def get_request(request: Request, request_id: str) -> Response:
        _authorize(request)
        found = await run_in_threadpool(requests_store.get, request_id)
        if found is None:
            raise NotFound(f"benchmark request {shown(request_id)} not found", "request_id")
        return _request_json(found)

    @app.get("/", response_class=HTMLResponse,
             summary="HTML page: pick a model, profile, traffic and demand; see the ranked "
                     "deployments, their curves and cost against capacity",
             openapi_extra=openapi_parameters(PAGE_QUERY),
             responses=responses(None, 404, 422, 503, html=True))
    async def page(request: Request) -> Response:
        index = holder.index
        if index is None:
            return HTMLResponse(message_page("no catalog yet", HOW_TO_BUILD), 503)
        if index.deployments is None:
            return HTMLResponse(message_page("catalog snapshot too old", f"snapshot "
                                             f"{index.snapshot_id} has no deployment table; "
                                             f"{REBUILD}"), 503)
        if not index.deployments.models:
            return HTMLResponse(message_page("empty catalog", "the catalog has no deployments"),
                                503)
        html, status = answer_page(index, index.deployments, request.query_params)
        return HTMLResponse(html, status)

    return app
