"""README.md's tour runs as written: the fenced block after `<!-- tour -->`, one command at a
time, in a fresh working directory with `.venv/bin` on PATH.

Changed on the way, and only these: the `tiny` model in place of `small` (it builds and serves
in seconds on a busy 2-core CI host, through the same code path), a free port in place of
8000, and fewer requests and tokens. A command ending in `&` runs in the background (the
server), and `kill %1` is the test stopping it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from servecat.net import free_port

REPO = Path(__file__).resolve().parent.parent
SMALLER = [  # (flag, value in the test)
    ("--requests", "4"), ("--concurrency", "2"), ("--concurrencies", "1,2"),
    ("--input-tokens", "uniform:8:32"), ("--output-tokens", "4"),
]


def tour_commands(readme: str) -> list[str]:
    """The commands of every ```bash block marked `<!-- tour -->`, continuation lines joined and
    trailing `# comments` dropped (the tour quotes no `#`)."""
    blocks = re.findall(r"<!-- tour -->\s*```bash\n(.*?)```", readme, re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s)#.*$", "", line).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


def for_the_test(command: str, port: int) -> str:
    command = re.sub(r"\bsmall\b", "tiny", command).replace("8000", str(port))
    for flag, value in SMALLER:
        command = re.sub(rf"{flag} \S+", f"{flag} {value}", command)
    return command


@pytest.mark.skipif(shutil.which("curl") is None, reason="the tour waits for the server with curl")
def test_readme_tour_runs(tmp_path):
    commands = tour_commands((REPO / "README.md").read_text())
    assert [c.split()[:2] for c in commands][:3] == [["servecat", "models"], ["servecat", "serve"],
                                                     ["curl", "-sf"]], commands
    assert any(c.startswith("servecat loadgen --url") for c in commands), commands
    port = free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    server: subprocess.Popen | None = None
    log = tmp_path / "serve.log"
    try:
        for command in (for_the_test(c, port) for c in commands):
            if command.startswith("kill "):
                assert server is not None and server.poll() is None, log.read_text()
                break
            if command.endswith("&"):
                server = subprocess.Popen(["bash", "-c", f"exec {command[:-1]}"], cwd=tmp_path,
                                          env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
                continue
            r = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, timeout=150,
                               capture_output=True, text=True)
            assert r.returncode == 0, (f"{command}\nexit {r.returncode}\n{r.stdout}\n{r.stderr}"
                                       + (f"\nserver: {log.read_text()}" if server else ""))
            assert "Traceback" not in r.stderr, r.stderr
            if command.startswith("servecat loadgen"):
                assert "TTFT" in r.stdout and "INVALID" not in r.stdout, r.stdout
        else:
            pytest.fail("the tour never stops its server (`kill %1`)")
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    assert (tmp_path / ".servecat/models/tiny/config.json").is_file()
    assert (tmp_path / "r.parquet").is_file()
