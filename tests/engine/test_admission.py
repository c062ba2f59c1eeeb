"""Requests that wait together are tokenized together: one tokenizer call for many prompts,
each answered as if it came alone (and a bad one fails alone)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
from engine_helpers import LiveServer, make_engine


def test_waiting_requests_are_tokenized_in_one_call(tiny_model, monkeypatch):
    engine = make_engine(tiny_model, max_model_len=256)
    tok = engine.tokenizer
    real = type(tok).__call__
    calls: list[int] = []
    first = threading.Event()

    def counted(self, text, *a, **k):
        calls.append(len(text) if isinstance(text, list) else 1)
        if not first.is_set():  # the first call is slow: the others arrive meanwhile
            first.set()
            time.sleep(0.5)
        return real(self, text, *a, **k)

    body = {"model": "tiny", "max_tokens": 3, "temperature": 0}
    prompts = [f"def f{i}(x):\n    return x" for i in range(12)]
    with LiveServer(engine) as live, httpx.Client(base_url=live.base_url, timeout=60) as http:
        alone = [http.post("/v1/completions", json={**body, "prompt": p}).json()
                 for p in prompts]
        monkeypatch.setattr(type(tok), "__call__", counted)

        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as client:
                bad = client.post("/v1/completions", json={**body, "prompt": "x",
                                                           "temperature": -1})
                return await asyncio.gather(bad, *(client.post(
                    "/v1/completions", json={**body, "prompt": p}) for p in prompts))

        bad, *rs = asyncio.run(together())
    assert bad.status_code == 400 and "temperature" in bad.text
    assert sum(calls) == len(prompts) and len(calls) < len(prompts), calls
    assert [r.json()["choices"][0]["text"] for r in rs] == \
        [a["choices"][0]["text"] for a in alone]
    assert [r.json()["usage"] for r in rs] == [a["usage"] for a in alone]
