"""The OpenAI-compatible server over real HTTP on 127.0.0.1, with the official client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from engine_helpers import LiveServer, make_engine


@pytest.fixture(scope="module")
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base_url + "/v1", api_key="unused", max_retries=0)


def test_completions(client, live):
    r = client.completions.create(model="tiny", prompt="def main():", max_tokens=8,
                                  temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    again = client.completions.create(model="tiny", prompt="def main():", max_tokens=8,
                                      temperature=0)
    assert again.choices[0].text == r.choices[0].text


def test_completions_stream_with_usage(client):
    full = client.completions.create(model="tiny", prompt="import os", max_tokens=10,
                                     temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt="import os", max_tokens=10,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full
    assert chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 6
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
        temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6


def test_models_tokenize_health_metrics(client, live):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    # Its own tokens: under xdist this test may be the first on its worker's server.
    client.completions.create(model="tiny", prompt="import os", max_tokens=4, temperature=0)
    with httpx.Client(base_url=live.base_url) as http:
        assert http.get("/health").status_code == 200
        tok = http.post("/tokenize", json={"prompt": "import os"}).json()
        assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == 256
        chat = http.post("/tokenize", json={"messages": [{"role": "user", "content": "x"}]})
        assert chat.json()["count"] > tok["count"]
        text = http.get("/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
                 "vllm:request_queue_time_seconds_count", "vllm:num_preemptions_total",
                 "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        assert name in text, name
    gen = [line for line in text.splitlines() if line.startswith("vllm:generation_tokens_total")]
    assert float(gen[0].split()[-1]) > 0


BAD_REQUESTS = [
    ("not json", "{not json", 400, "not valid JSON"),
    ("no prompt", {"model": "tiny"}, 400, "prompt"),
    ("bad temperature", {"model": "tiny", "prompt": "a", "temperature": -1}, 400, "temperature"),
    ("bad max_tokens", {"model": "tiny", "prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ("n > 1", {"model": "tiny", "prompt": "a", "n": 2}, 400, "n"),
    ("two prompts", {"model": "tiny", "prompt": ["a", "b"]}, 400, "batch of one"),
    ("token id out of range", {"model": "tiny", "prompt": [1, 99999]}, 400, "[0, 4096)"),
    ("prompt over context", {"model": "tiny", "prompt": [5] * 300}, 400,
     "maximum context length is 256 tokens"),
    ("prompt + max_tokens over context", {"model": "tiny", "prompt": [5] * 200,
                                          "max_tokens": 100}, 400, "256 tokens"),
    ("unknown model", {"model": "gpt-4", "prompt": "a"}, 404, "serves `tiny`"),
    ("logprobs over 20", {"model": "tiny", "prompt": "a", "logprobs": 21}, 400, "[0, 20]"),
]


@pytest.mark.parametrize(("case", "body", "status", "says"), BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests(live, case, body, status, says):
    with httpx.Client(base_url=live.base_url) as http:
        if isinstance(body, str):
            r = http.post("/v1/completions", content=body,
                          headers={"content-type": "application/json"})
        else:
            r = http.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert says in err["message"], err


def test_bad_chat_request(live):
    with httpx.Client(base_url=live.base_url) as http:
        r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_client_sees_openai_errors(client):
    with pytest.raises(openai.NotFoundError, match="tiny"):
        client.completions.create(model="nope", prompt="a", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt=[5] * 300, max_tokens=1)


def test_api_key_required(tiny_model):
    with LiveServer(make_engine(tiny_model), api_key="s3cret") as server:
        with httpx.Client(base_url=server.base_url) as http:
            assert http.get("/health").status_code == 200
            r = http.get("/v1/models")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert http.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = openai.OpenAI(base_url=server.base_url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.completions.create(model="tiny", prompt="a", max_tokens=2).usage
        bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="tiny", prompt="a", max_tokens=2)


def test_full_queue_answers_429_at_once(tiny_model):
    with LiveServer(make_engine(tiny_model, max_waiting=0)) as server, \
            httpx.Client(base_url=server.base_url, timeout=5) as http:
        r = http.post("/v1/completions", json={"model": "tiny", "prompt": "a"})
    assert r.status_code == 429
    assert "waiting" in r.json()["error"]["message"]


def test_stream_disconnect_frees_blocks(tiny_model):
    # Its own server with the model's whole context: 2,000 tokens outlast any disconnect check.
    with LiveServer(make_engine(tiny_model)) as live, \
            httpx.Client(base_url=live.base_url) as http:
        engine = live.engine
        body = {"model": "tiny", "prompt": "import os", "max_tokens": 2000, "ignore_eos": True,
                "stream": True}
        for _ in range(3):
            with http.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        json.loads(line[6:])
                        break  # leave after the first token: the connection closes
        live.wait_idle()
        assert engine.block_manager.is_whole()
        assert engine.metrics.success["abort"] >= 3
