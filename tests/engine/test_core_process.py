"""The engine core in its own process (as `servecat serve` runs it) behind the HTTP front:
serving, logprobs, cancellation, back-pressure, failures, a dead core, and a child that never
outlives the server. Real processes, real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from engine_helpers import LiveServer, engine_failing_first_step, make_engine, process_core

from engine.sequence import SamplingParams
from servecat.net import free_port

REPO = Path(__file__).resolve().parents[2]
OK = {"model": "tiny", "prompt": "import os", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def proc_live(tiny_model):
    with LiveServer(process_core(tiny_model, max_model_len=256)) as live:
        yield live


def _metric(http: httpx.Client, name: str, labels: str = "") -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"vllm:{name}{{") and labels in line:
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def _wait(cond, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_process_core_serves_what_the_engine_makes(proc_live, tiny_model, prompts):
    engine = make_engine(tiny_model, max_model_len=256)
    want = engine.generate(prompts[:3], SamplingParams(temperature=0, max_tokens=12,
                                                       ignore_eos=True))
    with httpx.Client(base_url=proc_live.base_url, timeout=60) as http:
        for p, seq in zip(prompts[:3], want, strict=True):
            body = {"model": "tiny", "prompt": p, "max_tokens": 12, "temperature": 0,
                    "ignore_eos": True}
            r = http.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["text"] == seq.text
            assert r.json()["usage"]["completion_tokens"] == 12
            with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
                chunks = [json.loads(line[6:]) for line in s.iter_lines()
                          if line.startswith("data: {")]
            assert "".join(c["choices"][0]["text"] for c in chunks) == seq.text
        assert _metric(http, "generation_tokens_total") >= 72
        assert http.get("/health").status_code == 200


def test_logprobs_and_echo_through_the_process(proc_live):
    with httpx.Client(base_url=proc_live.base_url, timeout=60) as http:
        r = http.post("/v1/completions", json={**OK, "logprobs": 2, "echo": True})
        assert r.status_code == 200, r.text
        lp = r.json()["choices"][0]["logprobs"]
        assert lp["token_logprobs"][0] is None and len(lp["tokens"]) > 4
        assert all(len(t) >= 2 for t in lp["top_logprobs"][1:])  # top 2, and the chosen
        chat = http.post("/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "logprobs": True, "top_logprobs": 1})
        assert len(chat.json()["choices"][0]["logprobs"]["content"]) == 3


def test_stop_string_finishes_in_the_front_and_frees_the_core(proc_live):
    with httpx.Client(base_url=proc_live.base_url, timeout=60) as http:
        free = http.post("/v1/completions", json={**OK, "max_tokens": 30, "ignore_eos": True})
        text = free.json()["choices"][0]["text"]
        stop = text[5:8]
        assert stop.strip(), text
        r = http.post("/v1/completions", json={**OK, "max_tokens": 30, "ignore_eos": True,
                                                "stop": [stop]})
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and choice["text"] == text[:text.find(stop)]
        assert _wait(lambda: _metric(http, "num_requests_running") == 0)
        assert _wait(lambda: _metric(http, "kv_cache_usage_perc") == 0.0)


def test_disconnect_aborts_the_request_in_the_core(proc_live):
    body = {"model": "tiny", "prompt": "import os", "max_tokens": 200, "ignore_eos": True,
            "stream": True}
    with httpx.Client(base_url=proc_live.base_url, timeout=60) as http:
        aborted = _metric(http, "request_success_total", 'finished_reason="abort"')
        for _ in range(3):
            with http.stream("POST", "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        break  # leave after the first token: the connection closes
        assert _wait(lambda: _metric(http, "num_requests_running") == 0)
        assert _wait(lambda: _metric(http, "kv_cache_usage_perc") == 0.0)  # pool whole
        assert _metric(http, "request_success_total", 'finished_reason="abort"') >= aborted + 3


def test_full_queue_answers_429(tiny_model):
    with LiveServer(process_core(tiny_model, max_waiting=0)) as live, \
            httpx.Client(base_url=live.base_url, timeout=20) as http:
        r = http.post("/v1/completions", json=OK)
    assert r.status_code == 429 and "waiting" in r.json()["error"]["message"]


def test_failing_step_in_the_child_fails_its_request_only(tiny_model):
    core = process_core(tiny_model, make=engine_failing_first_step, max_model_len=256)
    with LiveServer(core) as live, httpx.Client(base_url=live.base_url, timeout=30) as http:
        r = http.post("/v1/completions", json=OK)
        assert r.status_code == 500 and "kernel fault" in r.json()["error"]["message"]
        r = http.post("/v1/completions", json=OK)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        assert http.get("/health").status_code == 200


def test_dead_core_is_503_everywhere_and_shutdown_is_bounded(tiny_model):
    live = LiveServer(process_core(tiny_model, max_model_len=256))
    with live, httpx.Client(base_url=live.base_url, timeout=30) as http:
        waiting: list[httpx.Response] = []
        started = threading.Event()

        def in_flight():
            with http.stream("POST", "/v1/completions", json={
                    **OK, "max_tokens": 240, "ignore_eos": True, "stream": True}) as r:
                lines = []
                for line in r.iter_lines():
                    started.set()
                    lines.append(line)
                waiting.append("\n".join(lines))

        t = threading.Thread(target=in_flight)
        t.start()
        assert started.wait(20)
        os.kill(live.engine.pid, signal.SIGKILL)
        t.join(timeout=20)
        assert waiting and "engine core process exited" in waiting[0], waiting
        health = http.get("/health")
        assert health.status_code == 503 and "exit code -9" in health.json()["error"]["message"]
        assert http.post("/v1/completions", json=OK).status_code == 503
    assert not live.thread.is_alive(), "shutdown hung"


def _serve(model: Path) -> tuple[subprocess.Popen, int, str]:
    """`servecat serve` on a free port; returns it, its engine core's pid and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--model", str(model), "--port", str(port),
         "--served-model-name", "tiny", "--kv-cache-memory", "0.05", "--num-threads", "1"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for line in proc.stderr:
        found = re.search(r"engine core pid (\d+)", line)
        if found:
            assert _wait(lambda: _healthy(url), 60), "server did not come up"
            return proc, int(found.group(1)), url
    raise AssertionError(f"serve exited ({proc.wait()}) without starting its core")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_core_process_never_outlives_the_server(tiny_model, sig):
    proc, core_pid, url = _serve(tiny_model)
    try:
        r = httpx.post(url + "/v1/completions", json=OK, timeout=30)
        assert r.status_code == 200, r.text
        assert not _gone(core_pid)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _wait(lambda: _gone(core_pid), 20), f"core {core_pid} outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not _gone(core_pid):
            os.kill(core_pid, signal.SIGKILL)
