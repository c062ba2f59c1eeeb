"""Helpers for pipeline tests: temp Dagster instance, store, MLflow, targets.

Deployments use engine `openai` with a managed launch command that starts the scripted
OpenAI-compatible server (bench.scripted_server) on a free port: a real HTTP server whose
timings are known, so runs take seconds and assert on exact counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.matrix import benchmark_matrix, deployments
from assets.runs import benchmark_runs
from resources.store import ResultStore
from resources.target_resource import TargetsResource
from resources.tracking import Tracking
from resources.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[2]


def scripted_command(scenario: dict, script: str = "-m bench.scripted_server", extra: str = "") -> str:
    """A launch-command template for the scripted server (braces escaped for str.format)."""
    spec = json.dumps(scenario).replace("{", "{{").replace("}", "}}")
    return f"{{python}} {script} --port {{port}} {extra} --scenario '{spec}'"


def spec_dict(model: Path, levels=(1, 2, 4), requests: int = 8, output_tokens: int = 8) -> dict:
    return {
        "name": "pipe",
        "models": [{"id": str(model), "name": "tiny"}],
        "hardware": ["cpu"],
        "engines": [{"name": "openai"}],
        "quantizations": ["fp32"],
        "workloads": {"lengths": [{"name": "chat", "input_tokens": 32,
                                   "output_tokens": output_tokens}],
                      "loads": [{"concurrency": list(levels)}], "requests": requests},
    }


@dataclass
class Bench:
    root: Path
    instance: dg.DagsterInstance
    spec: Path
    store: ResultStore
    tracking_uri: str
    commands: dict = field(default_factory=dict)

    def resources(self, **overrides) -> dict:
        res = {"store": self.store, "tracking": Tracking(tracking_uri=self.tracking_uri),
               "targets": TargetsResource(commands=self.commands, health_timeout_s=60),
               "warehouse": Warehouse(database=str(self.root / "results.duckdb"))}
        return res | overrides

    def matrix(self) -> list[str]:
        dg.materialize([benchmark_matrix], instance=self.instance, resources=self.resources(),
                       run_config={"ops": {"benchmark_matrix": {"config": {
                           "spec_path": str(self.spec)}}}})
        return self.instance.get_dynamic_partitions(deployments.name)

    def run(self, key: str, force: bool = False, raise_on_error: bool = True, **overrides):
        return dg.materialize([benchmark_runs], instance=self.instance, partition_key=key,
                              resources=self.resources(**overrides), raise_on_error=raise_on_error,
                              run_config={"ops": {"benchmark_runs": {"config": {"force": force}}}})

    def env(self) -> dict[str, str]:
        """The same environment for a `dagster` CLI subprocess."""
        return dict(os.environ, DAGSTER_HOME=str(self.root / "home"), SERVECAT_STORE=self.store.root,
                    SERVECAT_MATRIX=str(self.spec), MLFLOW_TRACKING_URI=self.tracking_uri,
                    SERVECAT_RESULTS_DB=str(self.root / "results.duckdb"),
                    SERVECAT_TARGET_COMMANDS=json.dumps(self.commands))


def dagster_cli(args: list[str], env: dict, timeout: float = 240, **kw):
    exe = str(Path(sys.executable).parent / "dagster")
    return subprocess.run([exe, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


class LiveApp:
    """An ASGI app served by uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{s.getsockname()[1]}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveApp:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
