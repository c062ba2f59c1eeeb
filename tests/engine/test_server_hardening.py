"""No single request can break the server: bad fields, failing steps, a dead loop, huge bodies,
abandoned requests. Each test uses a real server on 127.0.0.1 and the engine it serves."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import httpx
import pytest
from engine_helpers import LiveServer, make_engine

OK = {"model": "tiny", "prompt": "import os", "max_tokens": 4, "temperature": 0}


@pytest.fixture()
def server(tiny_model):
    with LiveServer(make_engine(tiny_model, max_model_len=256)) as live:
        yield live


def _served(http: httpx.Client) -> bool:
    r = http.post("/v1/completions", json=OK)
    return r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize(("field", "says"), [
    ({"seed": 2**70}, "seed"), ({"seed": -(2**70)}, "seed"), ({"top_k": 2**40}, "top_k"),
    ({"stop_token_ids": [2**40]}, "stop_token_ids"), ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"max_tokens": 2**70}, "maximum context length"), ({"temperature": float("inf")}, "temp"), ({"top_p": float("nan")}, "top_p"),
])
def test_out_of_range_sampling_field_fails_only_that_request(server, field, says):
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        # Python's json writes inf/nan as Infinity/NaN, which Python's json also reads.
        r = http.post("/v1/completions", content=json.dumps({**OK, **field}),
                      headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert says in r.json()["error"]["message"]
        assert http.get("/health").status_code == 200
        assert _served(http)


def test_largest_valid_seed_is_served(server):
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        r = http.post("/v1/completions", json={**OK, "seed": 2**64 - 1, "temperature": 1.0})
        assert r.status_code == 200, r.text


def test_error_admitting_one_request_fails_it_alone(server, monkeypatch):
    engine = server.engine
    real = engine.add_request

    def add_request(request_id, prompt_ids, params):
        if params.max_tokens == 3:  # this one request trips an unexpected error
            raise OverflowError("boom")
        return real(request_id, prompt_ids, params)

    monkeypatch.setattr(engine, "add_request", add_request)
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        r = http.post("/v1/completions", json={**OK, "max_tokens": 3})
        assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
        assert http.get("/health").status_code == 200
        assert _served(http)


def test_failing_step_fails_its_requests_and_the_loop_goes_on(server, monkeypatch):
    runner = server.engine.runner
    real, calls = runner.run, []

    def run(batch):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("kernel fault")
        return real(batch)

    monkeypatch.setattr(runner, "run", run)
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        r = http.post("/v1/completions", json=OK)
        assert r.status_code == 500 and "kernel fault" in r.json()["error"]["message"]
        assert _served(http)
        assert server.engine.block_manager.is_whole()


class LoopBug(BaseException):
    """Something the loop does not expect at all (not even an Exception)."""


def test_dead_loop_is_reported_and_shutdown_finishes(tiny_model, monkeypatch):
    live = LiveServer(make_engine(tiny_model, max_model_len=256))
    with live, httpx.Client(base_url=live.base_url, timeout=20) as http:
        assert _served(http)
        waiting = []

        def has_work():
            raise LoopBug("step loop broke")

        def in_flight():
            waiting.append(http.post("/v1/completions", json={**OK, "max_tokens": 50}))

        monkeypatch.setattr(live.engine, "has_work", has_work)
        t = threading.Thread(target=in_flight)
        t.start()
        t.join(timeout=10)
        assert waiting and waiting[0].status_code == 503, waiting
        assert "step loop broke" in waiting[0].json()["error"]["message"]
        health = http.get("/health")
        assert health.status_code == 503 and "LoopBug" in health.json()["error"]["message"]
        r = http.post("/v1/completions", json=OK)
        assert r.status_code == 503
    assert not live.thread.is_alive(), "shutdown hung"


def test_50mb_body_gets_413_at_once_and_health_keeps_answering(server):
    body = b'{"model": "tiny", "prompt": "' + b"a" * (50 << 20) + b'"}'
    health: list[float] = []
    stop = threading.Event()

    def poll():
        with httpx.Client(base_url=server.base_url, timeout=5) as h:
            while not stop.is_set():
                t0 = time.monotonic()
                assert h.get("/health").status_code == 200
                health.append(time.monotonic() - t0)
                time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    while not health:
        time.sleep(0.01)
    try:
        t0 = time.monotonic()
        status, text = _post_raw(server.port, "/v1/completions", body)
        elapsed = time.monotonic() - t0
        before = len(health)
        while len(health) < before + 3:  # and it goes on answering
            time.sleep(0.01)
    finally:
        stop.set()
        poller.join()
    assert status == 413, text
    assert "larger than" in text
    assert elapsed < 1.0, elapsed
    assert health and max(health) < 1.0, health


def test_chunked_body_over_the_limit_gets_413(tiny_model):
    def chunks():  # no content-length: the limit is counted while reading
        for _ in range(4):
            yield b"x" * (1 << 19)

    engine = make_engine(tiny_model, max_model_len=256)
    with LiveServer(engine, max_body_bytes=1 << 20) as live, \
            httpx.Client(base_url=live.base_url, timeout=20) as http:
        r = http.post("/tokenize", content=chunks())
        assert r.status_code == 413, r.text
        assert http.post("/tokenize", json={"prompt": "import os"}).status_code == 200


def test_overlong_prompt_refused_before_tokenizing(server, monkeypatch):
    tokenized = []
    tok = server.engine.tokenizer
    real = type(tok).__call__
    monkeypatch.setattr(type(tok), "__call__",
                        lambda self, *a, **k: tokenized.append(1) or real(self, *a, **k))
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        t0 = time.monotonic()
        r = http.post("/v1/completions", json={**OK, "prompt": "word " * 1_000_000})
        elapsed = time.monotonic() - t0
        assert r.status_code == 400 and "maximum context length" in r.text
        assert not tokenized and elapsed < 2.0
        r = http.post("/v1/chat/completions", json={
            **{k: v for k, v in OK.items() if k != "prompt"},
            "messages": [{"role": "user", "content": "word " * 1_000_000}]})
        assert r.status_code == 400 and "maximum context length" in r.text
        r = http.post("/tokenize", json={"prompt": "word " * 1_000_000})
        assert r.status_code == 400
    assert not tokenized


@pytest.mark.parametrize("api_key", [None, "k"])
def test_non_streaming_request_aborted_when_client_leaves(tiny_model, api_key):
    with LiveServer(make_engine(tiny_model), api_key=api_key) as live:
        engine = live.engine
        body = {"model": "tiny", "prompt": "import os", "max_tokens": 2000, "ignore_eos": True}
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        with pytest.raises(httpx.ReadTimeout), \
                httpx.Client(base_url=live.base_url, timeout=1.0, headers=headers) as http:
            http.post("/v1/completions", json=body)  # gives up after 1 s: the socket closes
        live.wait_idle(timeout=10)
        assert engine.metrics.success.get("abort", 0) >= 1
        assert engine.block_manager.is_whole()


@pytest.mark.parametrize(("content", "says"), [
    ([{"type": "text", "text": 5}], "text"),
    ([{"type": "image_url", "image_url": {"url": "x"}}], "image_url"),
    ([{"text": "no type"}], "type"),
    ([7], "content"),
])
def test_bad_content_parts_are_400(server, content, says):
    msgs = [{"role": "user", "content": content}]
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        for path, body in (("/v1/chat/completions", {"model": "tiny", "messages": msgs,
                                                    "max_tokens": 2}),
                           ("/tokenize", {"messages": msgs})):
            r = http.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            assert says in r.json()["error"]["message"]


def _post_raw(port: int, path: str, body: bytes) -> tuple[int, str]:
    """POST BODY with its content-length, reading the answer even if the server stops reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  f"content-length: {len(body)}\r\n\r\n".encode())
        with contextlib.suppress(OSError):  # refused mid-body: the answer is already waiting
            s.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) == 0:
            try:
                part = s.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest.decode(errors="replace")


@pytest.mark.parametrize("field", [{"top_p": 5e-324}, {"temperature": 5e-324},
                                   {"temperature": 1e-7, "top_p": 1e-30}])
def test_denormal_sampling_values_are_served(server, field):
    """Found by fuzzing: a top_p that is 0 in float32 dropped every token, and a tiny
    temperature divided logits into inf; both made the step fail for every request in it."""
    with httpx.Client(base_url=server.base_url, timeout=20) as http:
        r = http.post("/v1/completions", json={**OK, **field})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
