"""OpenAI-compatible HTTP server over the engine: completions, chat, models, tokenize, metrics.

The app's wiring (routes, API keys, errors, start and stop); requests are handled by
engine/serving.py, and the engine runs in its core (engine/core.py): in a child process under
`servecat serve` (engine/core_process.py), or on a thread over an engine the caller built.
"""

from __future__ import annotations

import hmac
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from engine.api_errors import APIError, error_response
from engine.core import ThreadCore
from engine.openapi import error_responses, generation_doc, with_components
from engine.protocol import ChatCompletionRequest, CompletionRequest, TokenizeRequest
from engine.serving import MAX_BODY_BYTES, Server

__all__ = ["MAX_BODY_BYTES", "APIError", "Server", "build_app", "make_app"]

OPEN_PATHS = ("/health", "/metrics")  # no API key needed, as in vLLM


class AuthMiddleware:
    """`Authorization: Bearer KEY` on every path but OPEN_PATHS, compared in constant time.

    Plain ASGI rather than `@app.middleware`: Starlette's BaseHTTPMiddleware wraps `receive`
    and hid client disconnects from the handlers, so abandoned requests ran to the end.
    """

    def __init__(self, app, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(header, self.expected):
                response = error_response(401, "missing or invalid API key: send "
                                               "'Authorization: Bearer <key>'",
                                          "AuthenticationError", code="invalid_api_key")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def make_app(server: Server | None, api_key: str | None = None) -> FastAPI:
    """The app over SERVER (None: an app that only describes itself: its OpenAPI document)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        server.async_engine.start()
        yield
        server.async_engine.stop()
        server.workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="servecat engine", lifespan=lifespan)
    if api_key:
        app.add_middleware(AuthMiddleware, api_key=api_key)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(404)
    async def not_found(request: Request, _exc):
        return error_response(404, f"no route {request.method} {request.url.path}",
                              "NotFoundError")

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        response = error_response(405, f"method {request.method} not allowed on "
                                       f"{request.url.path}", "BadRequestError")
        response.headers.update(getattr(exc, "headers", None) or {})  # `Allow`, RFC 9110
        return response

    @app.get("/health", response_class=PlainTextResponse,
             responses={200: {"description": "the engine is serving (empty body)",
                              "content": {"text/plain": {}}}, **error_responses(503)})
    async def health() -> Response:
        if not server.async_engine.alive:
            return error_response(503, server.async_engine.dead or "the engine is not running",
                                  "ServiceUnavailableError")
        return PlainTextResponse("", status_code=200)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{
            "id": server.served, "object": "model", "created": int(time.time()),
            "owned_by": "servecat", "root": server.facts.model,
            "max_model_len": server.facts.max_model_len}]}

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text format",
                              "content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(server.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/tokenize", **generation_doc(TokenizeRequest, stream=False))
    async def tokenize(request: Request) -> dict:
        raw = await server.read_body(request)
        return await server.off_loop(server.tokenize, raw)

    @app.post("/v1/completions", **generation_doc(CompletionRequest))
    async def completions(request: Request) -> Response:
        return await server.generate(request, chat=False)

    @app.post("/v1/chat/completions", **generation_doc(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        return await server.generate(request, chat=True)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = with_components(
                FastAPI.openapi(app), CompletionRequest, ChatCompletionRequest,
                TokenizeRequest)
        return app.openapi_schema

    app.openapi = openapi
    return app


def build_app(engine, served_model_name: str | None = None, api_key: str | None = None,
              max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving ENGINE under SERVED_MODEL_NAME.

    ENGINE is a started engine.core_process.ProcessCore (`servecat serve`), an
    engine.core.ThreadCore (`--engine-core thread`), or an LLMEngine, whose core then runs on a
    thread of this process. Without a name the model is served as
    its path and, as an alias, the folder's name, so `serve --model .servecat/models/small`
    answers requests for `small`.
    """
    core = engine if hasattr(engine, "facts") else ThreadCore(engine)
    if served_model_name:
        return make_app(Server(core, served_model_name, api_key, max_body_bytes), api_key)
    path = core.facts.model
    alias = Path(path.rstrip("/")).name
    return make_app(Server(core, path, api_key, max_body_bytes, (alias,) if alias else ()),
                    api_key)
