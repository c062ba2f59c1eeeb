"""A real `dagster-daemon` over a temp DAGSTER_HOME for the fleet tests: the shipped local
instance config with shorter intervals, runs of benchmark_runs_job submitted to its queue the
way a sensor submits them, and the pid of a run's worker to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from tests.pipeline.fleet_support import run_tags_for
from tests.pipeline.support import REPO

LOCATION = "servecat"  # the code location's name, for the daemon and for the runs made here
# Sensors of the code location that would add runs of their own while the tests measure.
QUIET_SENSORS = ("matrix_spec_sensor", "catalog_automation", "benchmark_request_sensor",
                 "runpod_orphan_sensor")


def instance_config(**limits) -> dict:
    """configs/deploy/local/dagster.yaml with the daemon's intervals shortened (seconds, not
    tens of seconds) and, when given, other concurrency limits."""
    config = yaml.safe_load((REPO / "configs/deploy/local/dagster.yaml").read_text())
    config["run_coordinator"]["config"] = {"dequeue_interval_seconds": 1}
    config["run_monitoring"] |= {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1}
    if "pool" in limits:
        config["concurrency"]["pools"]["default_limit"] = limits["pool"]
    if "tags" in limits:
        config["concurrency"]["runs"]["tag_concurrency_limits"] = limits["tags"]
    return config


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator:
    """pipeline.definitions loaded in this process under the daemon's location name."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="pipeline.definitions", working_directory=str(REPO)),
        location_name=LOCATION)
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        workspace = context.create_request_context()
        yield workspace, workspace.get_code_location(LOCATION).get_repository("__repository__")


def quiet(instance: dg.DagsterInstance, repo) -> None:
    """Stop the sensors that would start runs of their own (a new matrix, the catalog)."""
    for name in QUIET_SENSORS:
        sensor = repo.get_sensor(name)
        instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)


def submit(instance: dg.DagsterInstance, workspace, repo, key: str) -> str:
    """Queue a benchmark_runs_job run of partition KEY with the tags a sensor's RunRequest gets."""
    from pipeline.definitions import defs

    remote = repo.get_full_job("benchmark_runs_job")
    run = instance.create_run_for_job(
        defs.resolve_job_def("benchmark_runs_job"), tags=run_tags_for(key, instance),
        remote_job_origin=remote.get_remote_origin(), job_code_origin=remote.get_python_origin())
    instance.submit_run(run.run_id, workspace)
    return run.run_id


@contextmanager
def daemon(home: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` on pipeline.definitions, in its own process group: the daemon
    ignores SIGTERM from a non-interactive shell (DEVELOPERS.md), its code server and their
    run workers share the group, and all go with one SIGKILL of it."""
    workspace = home / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "pipeline.definitions", "location_name": LOCATION,
        "working_directory": str(REPO)}}]}))
    exe = str(REPO / ".venv/bin/dagster-daemon")
    with log.open("w") as out:
        proc = subprocess.Popen([exe, "run", "-w", str(workspace)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of RUN_ID's run worker, from its "Started process for run" engine event."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data
        if data and "pid" in data.metadata:
            return int(data.metadata["pid"].value)
    return None


def wait_for(what: str, check: Callable[[], object], timeout_s: float, log: Path | None = None):
    """CHECK's first truthy value, polled until TIMEOUT_S; else fail saying WHAT (and the end
    of the daemon's log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")
