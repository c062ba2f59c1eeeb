"""Generation over HTTP: completions and chat, whole or streamed (SSE), from the core's events.

A mixin of engine.serving.Server: it reads the request's settings there and the engine's
events from engine.async_engine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine.api_errors import APIError, error_type
from engine.async_engine import TokenEvent
from engine.openai_logprobs import CompletionLogprobs, Reply, chat_content


class Generation:
    async def events(self, request: Request, request_id: str,
                     queue: asyncio.Queue) -> AsyncIterator[TokenEvent]:
        """TokenEvents until finished; a client that goes away aborts the request."""
        finished = False
        checked = time.monotonic()
        try:
            while True:
                if not queue.empty():
                    event = queue.get_nowait()
                else:  # asyncio.timeout, not wait_for: no task per token
                    try:
                        async with asyncio.timeout(0.2):
                            event = await queue.get()
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
                    raise APIError(event.status, event.error, error_type(event.status))
                finished = event.finished
                yield event
                if finished:
                    return
        finally:
            if not finished:
                self.async_engine.abort(request_id)

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
        arrival = time.monotonic()  # TTFT and e2e count from here, as vLLM's do
        req, prompt_ids, params, reply = await self.admit((await self.read_body(request), chat))
        request_id, queue = self.submit(prompt_ids, params, arrival)
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
