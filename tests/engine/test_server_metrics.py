"""The server's latency metrics count from each request's arrival at the HTTP server (as
vLLM's do), not from when the engine admitted it: time spent in the front shows."""

from __future__ import annotations

import time

import httpx
from engine_helpers import LiveServer, make_engine

from engine.serving import Server

FRONT_DELAY = 0.5


def _sum(text: str, name: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"vllm:{name}_sum"))
    return float(line.split()[-1])


def test_ttft_and_e2e_include_time_before_the_engine(tiny_model, monkeypatch):
    real = Server.prepare

    def slow_prepare(self, items):  # a front that is slow to get requests ready
        time.sleep(FRONT_DELAY)
        return real(self, items)

    monkeypatch.setattr(Server, "prepare", slow_prepare)
    engine = make_engine(tiny_model, max_model_len=256)
    with LiveServer(engine) as live, httpx.Client(base_url=live.base_url, timeout=30) as http:
        r = http.post("/v1/completions", json={"model": "tiny", "prompt": "import os",
                                               "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200, r.text
        served = http.get("/metrics").text
    # The engine's own clock starts at admission, after the front's delay; the server's at
    # arrival, before it: the server's figures are the engine's plus at least the delay.
    admitted = engine.metrics.histograms
    assert _sum(served, "time_to_first_token_seconds") >= \
        admitted["time_to_first_token_seconds"].sum + FRONT_DELAY
    assert _sum(served, "e2e_request_latency_seconds") >= \
        admitted["e2e_request_latency_seconds"].sum + FRONT_DELAY

