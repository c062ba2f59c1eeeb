"""`servecat serve` starts the server from the command line and answers over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from servecat.net import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("core", "policy", "spin"), [("process", None, "0"),
                                                     ("thread", "ACTIVE", "30000000000")])
def test_servecat_serve_command(tiny_model, core, policy, spin):
    """It serves; and its OpenMP threads wait asleep (libgomp reports a spin count of 0) in
    every process of the engine, unless the caller set OMP_WAIT_POLICY."""
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--model", str(tiny_model),
           "--port", str(port), "--served-model-name", "tiny", "--max-num-seqs", "8",
           "--max-num-batched-tokens", "256", "--dtype", "fp32", "--kv-cache-memory", "0.05",
           "--api-key", "k", "--engine-core", core]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"  # libgomp prints its settings as it loads
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
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
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", proc.stdout.read().decode())
    # The server, and with a process core the core too, each load libgomp once.
    assert spins == [spin] * (2 if core == "process" else 1), spins


def test_unsupported_quantization_is_a_clean_error(tiny_model):
    r = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--model", str(tiny_model),
                        "--dtype", "fp16", "--device", "cpu"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "engine builtin does not support fp16 on cpu" in r.stderr


def test_bad_model_path_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--model",
                        str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not a model folder" in r.stderr and "--model" in r.stderr


def test_busy_port_is_said_before_loading(tiny_model):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--model",
                            str(tiny_model), "--port", str(port)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "KV blocks" not in r.stderr  # said before the model loaded


def test_folder_name_is_served_as_an_alias(tiny_model):
    from engine_helpers import LiveServer, make_engine

    # No served name: the server answers to the path, and to the folder's name too.
    with LiveServer(make_engine(tiny_model), served=None) as live:
        r = httpx.post(live.base_url + "/v1/completions", timeout=30,
                       json={"model": tiny_model.name, "prompt": "x", "max_tokens": 2})
        assert r.status_code == 200, r.text
        models = httpx.get(live.base_url + "/v1/models").json()["data"]
        assert models[0]["id"] == str(tiny_model)
