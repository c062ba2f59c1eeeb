"""`servecat serve` starts the server from the command line and answers over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from engine_helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def test_servecat_serve_command(tiny_model):
    port = free_port()
    cmd = [sys.executable, "-m", "servecat.cli", "serve", "--model", str(tiny_model),
           "--port", str(port), "--served-model-name", "tiny", "--max-num-seqs", "8",
           "--max-num-batched-tokens", "256", "--dtype", "fp32", "--kv-cache-memory", "0.05",
           "--api-key", "k"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        r = httpx.post(url + "/v1/completions", headers={"Authorization": "Bearer k"},
                       json={"model": "tiny", "prompt": "x", "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unsupported_quantization_is_a_clean_error(tiny_model):
    r = subprocess.run([sys.executable, "-m", "servecat.cli", "serve", "--model", str(tiny_model),
                        "--dtype", "fp16", "--device", "cpu"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "engine builtin does not support fp16 on cpu" in r.stderr
