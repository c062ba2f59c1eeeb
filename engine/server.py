"""OpenAI-compatible HTTP server over the engine: completions, chat, models, tokenize, metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from engine.async_engine import AsyncEngine, EngineDead, TokenEvent
from engine.llm_engine import LLMEngine, QueueFullError, RequestError
from engine.logprobs import MAX_LOGPROBS
from engine.openai_logprobs import CompletionLogprobs, Reply, TokenText, chat_content
from engine.openapi import error_responses, generation_doc, with_components
from engine.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    TokenizeRequest,
)
from engine.sequence import SamplingParams

OPEN_PATHS = ("/health", "/metrics")  # no API key needed, as in vLLM
# Far above any prompt a context window holds (1M tokens of text is ~4 MB), far below what
# would hurt the server: a 52 MB body once held it for 54 s and 7.5 GB.
MAX_BODY_BYTES = 16 << 20


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
    if isinstance(m.content, list):  # OpenAI content parts: only text is served
        kinds = sorted({p.type for p in m.content if p.type != "text"})
        if kinds:
            raise APIError(400, f"content parts of type {', '.join(kinds)} are not supported "
                                "(text only)", param="messages")
        return "".join(p.text or "" for p in m.content)
    return m.content or ""


def _longest_token_chars(tokenizer) -> int:
    """The most characters one token can stand for: every n-char text has >= n / this tokens."""
    vocab = tokenizer.get_vocab()
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return max([len(t) for t in vocab] + [len(str(t)) for t in added.values()] + [1])


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


class Server:
    def __init__(self, engine: LLMEngine, served_model_name: str, api_key: str | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, aliases: tuple[str, ...] = ()):
        self.engine = engine
        self.async_engine = AsyncEngine(engine)
        self.served = served_model_name
        self.accepted = {served_model_name, *aliases}  # names a request may send as `model`
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.tokenizer = engine.tokenizer
        self.token_text = TokenText(self.tokenizer)
        # A prompt longer than this many characters cannot fit the context, whatever it says.
        self.max_prompt_chars = engine.max_model_len * _longest_token_chars(self.tokenizer)
        # Parsing and tokenizing run here, never on the event loop (which must keep answering).
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="servecat-tokenize")
        engine.metrics.model_name = served_model_name

    # --- helpers ------------------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it passes max_body_bytes."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = APIError(413, f"request body is larger than {limit} bytes",
                             "RequestTooLargeError", code="request_too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def validate(self, raw: bytes, model: type[BaseModel]) -> Any:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise APIError(400, f"request body is not valid JSON: {exc}") from exc
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            # In a union, the deepest error names the field that was wrong.
            err = max(exc.errors(), key=lambda e: len(e["loc"]))
            loc = ".".join(str(x) for x in err["loc"])
            raise APIError(400, f"{loc}: {err['msg']}", param=loc or None) from exc
        if getattr(req, "model", None) not in (None, *self.accepted):
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                                f"`{self.served}`.", "NotFoundError", "model", "model_not_found")
        return req

    async def off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.workers, fn, *args)

    def check_chars(self, n: int, param: str) -> None:
        """Refuse a text that cannot fit the context before paying to tokenize it."""
        if n > self.max_prompt_chars:
            raise APIError(400, f"This model's maximum context length is "
                                f"{self.engine.max_model_len} tokens; a text of {n} characters "
                                f"is longer than that", param=param,
                           code="context_length_exceeded")

    def reply(self, req: SamplingFields, chat: bool, prompt_ids: list[int]) -> Reply:
        """What the reply carries beside text: logprobs (at most MAX_LOGPROBS), the echo."""
        as_ids = req.return_tokens_as_token_ids
        if chat:
            if req.top_logprobs is not None and not req.logprobs:
                raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            top = _bounded(req.top_logprobs or 0, "top_logprobs") if req.logprobs else None
            return Reply(top, as_ids=as_ids)
        top = None if req.logprobs is None else _bounded(req.logprobs, "logprobs")
        if not req.echo:
            return Reply(top, as_ids=as_ids)
        prompt = req.prompt[0] if isinstance(req.prompt, list) and len(req.prompt) == 1 \
            and isinstance(req.prompt[0], str | list) else req.prompt
        text = prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt_ids)
        return Reply(top, True, text, req.max_tokens == 0, as_ids)

    def params(self, req: SamplingFields, prompt_len: int, default_max: int | None,
               reply: Reply) -> SamplingParams:
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
        if max_tokens == 0:
            if not reply.echo_only:
                raise APIError(400, "max_tokens must be at least 1 (0 only with echo: true)",
                               param="max_tokens")
            # As vLLM: the step that scores the prompt also makes a token; it is not returned.
            max_tokens = 1
        if max_tokens is None:
            max_tokens = default_max or max(1, self.engine.max_model_len - prompt_len)
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not s for s in stop):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return SamplingParams(
            temperature=req.temperature, top_k=max(req.top_k, 0), top_p=req.top_p, seed=req.seed,
            max_tokens=max_tokens, stop=stop, stop_token_ids=list(req.stop_token_ids or []),
            ignore_eos=req.ignore_eos, logprobs=reply.top, prompt_logprobs=reply.prompt_logprobs)

    def encode_prompt(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            self.check_chars(len(prompt), "prompt")
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
        turns = [{"role": m.role, "content": _message_text(m)} for m in messages]
        self.check_chars(sum(len(t["content"]) for t in turns), "messages")
        try:
            text = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True,
                                                      tokenize=False)
        except Exception as exc:  # the model's own template refused these messages (jinja)
            raise APIError(400, f"messages: the chat template refused them: {exc}",
                           param="messages") from exc
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def submit(self, prompt_ids: list[int], params: SamplingParams):
        try:
            return self.async_engine.submit(prompt_ids, params)
        except RequestError as exc:
            raise APIError(400, str(exc), param="prompt", code="context_length_exceeded"
                           if "context length" in str(exc) else None) from exc
        except QueueFullError as exc:
            raise APIError(429, str(exc), "RateLimitError", code="too_many_requests") from exc
        except EngineDead as exc:
            raise APIError(503, str(exc), "ServiceUnavailableError") from exc

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
                    if event is None and not self.async_engine.alive:
                        raise APIError(503, self.async_engine.dead or "the engine is not "
                                       "running", "ServiceUnavailableError")
                if event is None:
                    continue
                if event.error:
                    raise APIError(event.status, event.error, _error_type(event.status))
                finished = event.finished
                yield event
                if finished:
                    return
        finally:
            if not finished:
                self.async_engine.abort(request_id)

    def prepare(self, raw: bytes, chat: bool) -> tuple[Any, list[int], SamplingParams, Reply]:
        """Body bytes to (request, prompt ids, sampling params, reply asks); on a worker thread."""
        req = self.validate(raw, ChatCompletionRequest if chat else CompletionRequest)
        prompt_ids = self.encode_chat(req.messages) if chat else self.encode_prompt(req.prompt)
        reply = self.reply(req, chat, prompt_ids)
        return req, prompt_ids, self.params(req, len(prompt_ids), None if chat else 16,
                                            reply), reply

    def logprobs(self, reply: Reply, chat: bool, fmt: CompletionLogprobs, prompt_ids: list[int],
                 prompt: list | None, entries: list) -> dict | None:
        """The `logprobs` of one choice or chunk: ENTRIES (generated), after PROMPT's (echo)."""
        if reply.top is None:
            return None
        if chat:
            return {"content": chat_content(entries, self.token_text, reply.as_ids),
                    "refusal": None}
        items = list(zip(prompt_ids, prompt, strict=True)) if prompt is not None else []
        return fmt.block(items + [(e.token_id, e) for e in entries])

    async def generate(self, request: Request, chat: bool) -> Response:
        req, prompt_ids, params, reply = await self.off_loop(
            self.prepare, await self.read_body(request), chat)
        request_id, queue = self.submit(prompt_ids, params)
        rid = ("chatcmpl-" if chat else "cmpl-") + request_id
        created = int(time.time())
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                self.stream(request, request_id, queue, rid, created, chat, usage, reply,
                            prompt_ids), media_type="text/event-stream")
        last, prompt_lps, entries = None, None, []
        async for event in self.events(request, request_id, queue):
            last = event
            prompt_lps = event.prompt_logprobs or prompt_lps
            entries += [event.logprob] if event.logprob is not None else []
        if last is None:  # the client went away
            return Response(status_code=499)
        generated = 0 if reply.echo_only else last.num_output_tokens
        usage = {"prompt_tokens": last.num_prompt_tokens, "completion_tokens": generated,
                 "total_tokens": last.num_prompt_tokens + generated}
        fmt = CompletionLogprobs(self.token_text, reply.as_ids)
        # Off the loop: a long echo with top-20 is thousands of token texts to look up.
        logprobs = None if reply.top is None else await self.off_loop(
            self.logprobs, reply, chat, fmt, prompt_ids, prompt_lps,
            [] if reply.echo_only else entries)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": last.text},
                      "logprobs": logprobs, "finish_reason": last.finish_reason}
        else:
            text = (reply.echo_text if reply.echo else "") + ("" if reply.echo_only else last.text)
            choice = {"index": 0, "text": text, "logprobs": logprobs,
                      "finish_reason": last.finish_reason}
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": self.served, "choices": [choice],
                             "usage": usage})

    async def stream(self, request: Request, request_id: str, queue: asyncio.Queue, rid: str,
                     created: int, chat: bool, include_usage: bool, reply: Reply,
                     prompt_ids: list[int]) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        fmt = CompletionLogprobs(self.token_text, reply.as_ids)

        def chunk(delta: str | None, finish: str | None, role: bool = False,
                  logprobs: dict | None = None) -> str:
            if chat:
                d: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if delta:
                    d["content"] = delta
                choice: dict[str, Any] = {"index": 0, "delta": d, "logprobs": logprobs,
                                          "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": logprobs,
                          "finish_reason": finish}
            body = {"id": rid, "object": obj, "created": created, "model": self.served,
                    "choices": [choice]}
            return f"data: {json.dumps(body)}\n\n"

        if chat:
            yield chunk(None, None, role=True)
        sent = 0
        last = None
        pending: list = []  # logprobs of tokens whose text is still held back
        try:
            async for event in self.events(request, request_id, queue):
                if reply.echo and last is None:  # the prompt first, as vLLM streams an echo
                    yield chunk(reply.echo_text, None, logprobs=await self.off_loop(
                        self.logprobs, reply, chat, fmt, prompt_ids, event.prompt_logprobs, []))
                last = event
                finish = event.finish_reason if event.finished else None
                if reply.echo_only:
                    if event.finished:
                        yield chunk("", finish)
                    continue
                pending += [event.logprob] if event.logprob is not None else []
                delta = event.text[sent:]
                sent = len(event.text)
                if delta or event.finished or pending:
                    yield chunk(delta, finish, logprobs=self.logprobs(
                        reply, chat, fmt, prompt_ids, None, pending))
                    pending = []
        except APIError as exc:
            err = {"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                             "code": exc.status}}
            yield f"data: {json.dumps(err)}\n\n"
        if include_usage and last is not None:
            generated = 0 if reply.echo_only else last.num_output_tokens
            body = {"id": rid, "object": obj, "created": created, "model": self.served,
                    "choices": [], "usage": {
                        "prompt_tokens": last.num_prompt_tokens, "completion_tokens": generated,
                        "total_tokens": last.num_prompt_tokens + generated}}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    def tokenize(self, raw: bytes) -> dict:
        req = self.validate(raw, TokenizeRequest)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "give exactly one of prompt or messages", param="prompt")
        if req.messages is not None:
            ids = self.encode_chat(req.messages)
        else:
            self.check_chars(len(req.prompt), "prompt")
            ids = self.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens).input_ids
        return {"tokens": ids, "count": len(ids), "max_model_len": self.engine.max_model_len}

    # --- the app ------------------------------------------------------------------------
    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI):
            self.async_engine.start()
            yield
            self.async_engine.stop()
            self.workers.shutdown(wait=False, cancel_futures=True)

        app = FastAPI(title="servecat engine", lifespan=lifespan)
        if self.api_key:
            app.add_middleware(AuthMiddleware, api_key=self.api_key)

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
            if not self.async_engine.alive:
                return error_response(503, self.async_engine.dead or "the engine is not running",
                                      "ServiceUnavailableError")
            return PlainTextResponse("", status_code=200)

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{
                "id": self.served, "object": "model", "created": int(time.time()),
                "owned_by": "servecat", "root": str(self.engine.config.model),
                "max_model_len": self.engine.max_model_len}]}

        @app.get("/metrics", response_class=PlainTextResponse,
                 responses={200: {"description": "Prometheus text format",
                                  "content": {"text/plain": {}}}})
        async def metrics() -> Response:
            return Response(self.engine.metrics.render(),
                            media_type="text/plain; version=0.0.4; charset=utf-8")

        @app.post("/tokenize", **generation_doc(TokenizeRequest, stream=False))
        async def tokenize(request: Request) -> dict:
            raw = await self.read_body(request)
            return await self.off_loop(self.tokenize, raw)

        @app.post("/v1/completions", **generation_doc(CompletionRequest))
        async def completions(request: Request) -> Response:
            return await self.generate(request, chat=False)

        @app.post("/v1/chat/completions", **generation_doc(ChatCompletionRequest))
        async def chat_completions(request: Request) -> Response:
            return await self.generate(request, chat=True)

        def openapi() -> dict:
            if app.openapi_schema is None:
                app.openapi_schema = with_components(
                    FastAPI.openapi(app), CompletionRequest, ChatCompletionRequest,
                    TokenizeRequest)
            return app.openapi_schema

        app.openapi = openapi
        return app


def _bounded(n: int, name: str) -> int:
    if not 0 <= n <= MAX_LOGPROBS:
        raise APIError(400, f"{name} must be an integer in [0, {MAX_LOGPROBS}], got {n}",
                       param=name)
    return n


def _error_type(status: int) -> str:
    return {400: "BadRequestError", 429: "RateLimitError",
            503: "ServiceUnavailableError"}.get(status, "InternalServerError")


def build_app(engine: LLMEngine, served_model_name: str | None = None,
              api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving ENGINE under SERVED_MODEL_NAME.

    Without a name it is served as the model path and, as an alias, the folder's name, so
    `serve --model .servecat/models/small` answers requests for `small`.
    """
    if served_model_name:
        return Server(engine, served_model_name, api_key, max_body_bytes).app()
    path = str(engine.config.model)
    alias = Path(path.rstrip("/")).name
    return Server(engine, path, api_key, max_body_bytes, (alias,) if alias else ()).app()


