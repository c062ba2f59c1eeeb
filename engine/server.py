"""OpenAI-compatible HTTP server over the engine: completions, chat, models, tokenize, metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from engine.async_engine import AsyncEngine, TokenEvent
from engine.llm_engine import LLMEngine, QueueFullError, RequestError
from engine.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    TokenizeRequest,
)
from engine.sequence import SamplingParams

OPEN_PATHS = ("/health", "/metrics")  # no API key needed, as in vLLM


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "BadRequestError",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code)


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | int | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param,
                      "code": code if code is not None else status}}
    return JSONResponse(body, status_code=status)


def _message_text(m: ChatMessage) -> str:
    if isinstance(m.content, list):  # OpenAI content parts: keep the text ones
        return "".join(p.get("text", "") for p in m.content if p.get("type") == "text")
    return m.content or ""


class Server:
    def __init__(self, engine: LLMEngine, served_model_name: str, api_key: str | None = None):
        self.engine = engine
        self.async_engine = AsyncEngine(engine)
        self.served = served_model_name
        self.api_key = api_key
        self.tokenizer = engine.tokenizer
        engine.metrics.model_name = served_model_name

    # --- helpers ------------------------------------------------------------------------
    async def parse(self, request: Request, model: type[BaseModel]) -> Any:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"request body is not valid JSON: {exc}") from exc
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise APIError(400, f"{loc}: {err['msg']}", param=loc or None) from exc
        if getattr(req, "model", None) not in (None, self.served):
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                                f"`{self.served}`.", "NotFoundError", "model", "model_not_found")
        return req

    def params(self, req: SamplingFields, prompt_len: int, default_max: int | None) -> SamplingParams:
        if req.logprobs not in (None, False):
            raise APIError(400, "logprobs are not supported by this server", param="logprobs")
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
        if max_tokens is None:
            max_tokens = default_max or max(1, self.engine.max_model_len - prompt_len)
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not s for s in stop):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return SamplingParams(
            temperature=req.temperature, top_k=max(req.top_k, 0), top_p=req.top_p, seed=req.seed,
            max_tokens=max_tokens, stop=stop, stop_token_ids=list(req.stop_token_ids or []),
            ignore_eos=req.ignore_eos)

    def encode_prompt(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            vocab = self.engine.model.spec.vocab_size
            if any(not 0 <= t < vocab for t in prompt):
                raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
            return list(prompt)
        raise APIError(400, "prompt must be a string, a list of token ids, or a batch of one "
                            "(several prompts per request are not supported)", param="prompt")

    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        if self.tokenizer.chat_template is None:
            raise APIError(400, "this model's tokenizer has no chat template; "
                                "use /v1/completions", param="messages")
        text = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": _message_text(m)} for m in messages],
            add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def submit(self, prompt_ids: list[int], params: SamplingParams):
        try:
            return self.async_engine.submit(prompt_ids, params)
        except RequestError as exc:
            raise APIError(400, str(exc), param="prompt", code="context_length_exceeded"
                           if "context length" in str(exc) else None) from exc
        except QueueFullError as exc:
            raise APIError(429, str(exc), "RateLimitError", code="too_many_requests") from exc

    # --- generation ---------------------------------------------------------------------
    async def events(self, request: Request, request_id: str,
                     queue: asyncio.Queue) -> AsyncIterator[TokenEvent]:
        """TokenEvents until finished; a client that goes away aborts the request."""
        finished = False
        checked = time.monotonic()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=0.2)
                except TimeoutError:
                    event = None
                # The server may not tell a stream that its client left: ask, every 0.2 s.
                if time.monotonic() - checked > 0.2:
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return
                if event is None:
                    continue
                if event.error:
                    raise APIError(500 if event.error.startswith("engine") else 400,
                                   event.error, "InternalServerError")
                finished = event.finished
                yield event
                if finished:
                    return
        finally:
            if not finished:
                self.async_engine.abort(request_id)

    async def generate(self, request: Request, chat: bool) -> Response:
        req = await self.parse(request, ChatCompletionRequest if chat else CompletionRequest)
        prompt_ids = self.encode_chat(req.messages) if chat else self.encode_prompt(req.prompt)
        params = self.params(req, len(prompt_ids), None if chat else 16)
        request_id, queue = self.submit(prompt_ids, params)
        rid = ("chatcmpl-" if chat else "cmpl-") + request_id
        created = int(time.time())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                self.stream(request, request_id, queue, rid, created, chat, usage),
                media_type="text/event-stream")
        last = None
        async for event in self.events(request, request_id, queue):
            last = event
        if last is None:  # the client went away
            return Response(status_code=499)
        usage = {"prompt_tokens": last.num_prompt_tokens,
                 "completion_tokens": last.num_output_tokens,
                 "total_tokens": last.num_prompt_tokens + last.num_output_tokens}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": last.text},
                      "logprobs": None, "finish_reason": last.finish_reason}
        else:
            choice = {"index": 0, "text": last.text, "logprobs": None,
                      "finish_reason": last.finish_reason}
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": self.served, "choices": [choice],
                             "usage": usage})

    async def stream(self, request: Request, request_id: str, queue: asyncio.Queue, rid: str,
                     created: int, chat: bool, include_usage: bool) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, role: bool = False) -> str:
            if chat:
                d: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if delta:
                    d["content"] = delta
                choice: dict[str, Any] = {"index": 0, "delta": d, "logprobs": None,
                                          "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None,
                          "finish_reason": finish}
            body = {"id": rid, "object": obj, "created": created, "model": self.served,
                    "choices": [choice]}
            return f"data: {json.dumps(body)}\n\n"

        if chat:
            yield chunk(None, None, role=True)
        sent = 0
        last = None
        try:
            async for event in self.events(request, request_id, queue):
                last = event
                delta = event.text[sent:]
                sent = len(event.text)
                if delta or event.finished:
                    yield chunk(delta, event.finish_reason if event.finished else None)
        except APIError as exc:
            err = {"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                             "code": exc.status}}
            yield f"data: {json.dumps(err)}\n\n"
        if include_usage and last is not None:
            body = {"id": rid, "object": obj, "created": created, "model": self.served,
                    "choices": [], "usage": {
                        "prompt_tokens": last.num_prompt_tokens,
                        "completion_tokens": last.num_output_tokens,
                        "total_tokens": last.num_prompt_tokens + last.num_output_tokens}}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    # --- the app ------------------------------------------------------------------------
    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI):
            self.async_engine.start()
            yield
            self.async_engine.stop()

        app = FastAPI(title="servecat engine", lifespan=lifespan)

        @app.middleware("http")
        async def auth(request: Request, call_next):
            if self.api_key and request.url.path not in OPEN_PATHS:
                header = request.headers.get("authorization", "")
                if header != f"Bearer {self.api_key}":
                    return error_response(401, "missing or invalid API key: send "
                                               "'Authorization: Bearer <key>'",
                                          "AuthenticationError", code="invalid_api_key")
            return await call_next(request)

        @app.exception_handler(APIError)
        async def api_error(_: Request, exc: APIError):
            return error_response(exc.status, exc.message, exc.type, exc.param, exc.code)

        @app.exception_handler(404)
        async def not_found(request: Request, _exc):
            return error_response(404, f"no route {request.method} {request.url.path}",
                                  "NotFoundError")

        @app.exception_handler(405)
        async def not_allowed(request: Request, _exc):
            return error_response(405, f"method {request.method} not allowed on "
                                       f"{request.url.path}", "BadRequestError")

        @app.get("/health")
        async def health() -> Response:
            return Response(status_code=200)

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{
                "id": self.served, "object": "model", "created": int(time.time()),
                "owned_by": "servecat", "root": str(self.engine.config.model),
                "max_model_len": self.engine.max_model_len}]}

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(self.engine.metrics.render(),
                            media_type="text/plain; version=0.0.4; charset=utf-8")

        @app.post("/tokenize")
        async def tokenize(request: Request) -> dict:
            req = await self.parse(request, TokenizeRequest)
            if (req.prompt is None) == (req.messages is None):
                raise APIError(400, "give exactly one of prompt or messages", param="prompt")
            ids = (self.encode_chat(req.messages) if req.messages is not None
                   else self.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)
                   .input_ids)
            return {"tokens": ids, "count": len(ids), "max_model_len": self.engine.max_model_len}

        @app.post("/v1/completions")
        async def completions(request: Request) -> Response:
            return await self.generate(request, chat=False)

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            return await self.generate(request, chat=True)

        return app


def build_app(engine: LLMEngine, served_model_name: str | None = None,
              api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving ENGINE under SERVED_MODEL_NAME (default: the model path)."""
    return Server(engine, served_model_name or str(engine.config.model), api_key).app()


