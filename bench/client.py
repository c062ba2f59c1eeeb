"""One streaming request, and the SSE parsing that turns its network reads into chunks.

Timestamps are taken as bytes arrive (one `perf_counter` per network read, in bench.http);
JSON is parsed only after the stream ends, so the measurement does not wait on parsing.
"""

from __future__ import annotations

import asyncio
import json
import time

from bench import errors as E
from bench.http import HTTPFailure, Pool, Response
from bench.schema import RequestRecord

_MAX_ERROR_BODY = 300


async def send(pool: Pool, data: bytes, rec: RequestRecord, total_timeout_s: float) -> None:
    """Send one pre-built streaming request; fills rec's times, reads, status, error; parses."""
    rec.sent = time.perf_counter()
    resp = Response(rec.reads)
    try:
        async with asyncio.timeout(total_timeout_s):
            await pool.request(data, resp)
    except TimeoutError:
        _fail(rec, E.TIMEOUT_TOTAL, f"no complete response within {total_timeout_s:g} s")
    except HTTPFailure as exc:
        _fail(rec, exc.kind, str(exc))
    except Exception as exc:  # noqa: BLE001 - any other failure is this request's, not the run's
        _fail(rec, E.CLIENT_ERROR, f"{type(exc).__name__}: {exc}")
    rec.http_status = resp.status or None
    rec.end = rec.reads[-1][0] if rec.reads else time.perf_counter()
    if rec.error_type is None and resp.status != 200:
        _http_error(resp, rec)
    if rec.error_type is None:
        parse_stream(rec)


def _http_error(resp: Response, rec: RequestRecord) -> None:
    text = b"".join(d for _, d in resp.reads)[:_MAX_ERROR_BODY].decode("utf-8", "replace")
    code = resp.status
    kind = E.RATE_LIMITED if code == 429 else E.HTTP_5XX if code >= 500 else E.HTTP_4XX
    _fail(rec, kind, f"HTTP {code}: {text}".strip())
    rec.reads.clear()


def parse_stream(rec: RequestRecord) -> None:
    """SSE reads -> content chunk times, text, usage, finish reason; or an error type."""
    done = False
    pending: list[bytes] = []
    partial = b""
    texts: list[str] = []
    try:
        for t, data in rec.reads:
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            for line in lines:
                line = line.rstrip(b"\r")
                if line:
                    if line.startswith(b"data:"):
                        pending.append(line[5:].strip())
                    continue
                for payload in pending:  # a blank line ends the event
                    done |= _event(payload, t, rec, texts)
                pending = []
        if partial.rstrip(b"\r").startswith(b"data:"):
            pending.append(partial.rstrip(b"\r")[5:].strip())
        for payload in pending:  # a last event without its blank line
            done |= _event(payload, rec.end, rec, texts)
    except _StreamError as exc:
        _fail(rec, exc.kind, str(exc))
        return
    rec.text = "".join(texts)
    if not rec.chunk_times:
        _fail(rec, E.EMPTY_STREAM, "HTTP 200 but the stream carried no generated text")
    elif not done:
        _fail(rec, E.STREAM_CUT, "the stream ended without `data: [DONE]`")


class _StreamError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _event(payload: bytes, t: float, rec: RequestRecord, texts: list[str]) -> bool:
    """Apply one `data:` payload to rec; True for `[DONE]`."""
    if payload == b"[DONE]":
        return True
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _StreamError(E.MALFORMED_SSE, f"invalid JSON in SSE data: {payload[:80]!r}") from None
    if not isinstance(obj, dict):
        raise _StreamError(E.MALFORMED_SSE, f"SSE data is not a JSON object: {payload[:80]!r}")
    if obj.get("error"):
        raise _StreamError(E.SERVER_ERROR_EVENT, f"error event: {str(obj['error'])[:200]}")
    content = False
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        text = choice.get("text") or delta.get("content") or delta.get("reasoning_content")
        if text:
            texts.append(text)
            content = True
        if choice.get("finish_reason"):
            rec.finish_reason = choice["finish_reason"]
    if content:
        rec.chunk_times.append(t)
    usage = obj.get("usage")
    if usage:
        rec.usage_output = usage.get("completion_tokens", rec.usage_output)
        rec.usage_input = usage.get("prompt_tokens", rec.usage_input)
    return False


def _fail(rec: RequestRecord, kind: str, message: str) -> None:
    if rec.error_type is None:
        rec.error_type, rec.error_message = kind, message[:500]
