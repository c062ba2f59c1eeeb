"""SSE parsing: content chunks, usage, split reads, and the stream errors."""

from __future__ import annotations

import json

from bench import errors as E
from bench.client import parse_stream
from bench.schema import RequestRecord


def _event(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _rec(reads: list[tuple[float, bytes]]) -> RequestRecord:
    rec = RequestRecord(0, "0", 8, 4)
    rec.reads, rec.end = reads, reads[-1][0] if reads else 0.0
    parse_stream(rec)
    return rec


def _text(t: str, finish=None) -> bytes:
    return _event({"choices": [{"index": 0, "text": t, "finish_reason": finish}]})


def test_chunks_usage_and_split_reads():
    role = _event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    a = _event({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    b = _event({"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]})
    usage = _event({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2}})
    # The second event is split across two reads: it counts when its last byte arrived.
    rec = _rec([(1.0, role), (2.0, a + b[:10]), (3.0, b[10:] + usage + b"data: [DONE]\n\n")])
    assert rec.ok and rec.text == "Hello"
    assert rec.chunk_times == [2.0, 3.0]
    assert (rec.usage_input, rec.usage_output, rec.finish_reason) == (8, 2, "stop")


def test_crlf_and_missing_final_blank_line():
    body = (_text("a") + _text("b")).replace(b"\n", b"\r\n") + b"data: [DONE]"
    rec = _rec([(1.0, body)])
    assert rec.ok and rec.text == "ab" and rec.chunk_times == [1.0, 1.0]


def test_stream_errors():
    assert _rec([(1.0, _text("a"))]).error_type == E.STREAM_CUT  # no [DONE]
    assert _rec([(1.0, b"data: {oops\n\n")]).error_type == E.MALFORMED_SSE
    assert _rec([(1.0, b"data: [DONE]\n\n")]).error_type == E.EMPTY_STREAM
    assert _rec([]).error_type == E.EMPTY_STREAM
    err = _rec([(1.0, _event({"error": {"message": "overloaded"}}))])
    assert err.error_type == E.SERVER_ERROR_EVENT and "overloaded" in err.error_message
