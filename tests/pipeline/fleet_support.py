"""Helpers for the fleet tests: the shipped deploy configs, deployment keys of two hardware
types, and benchmark runs created the way a sensor or backfill creates them."""

from __future__ import annotations

import socket
from pathlib import Path

import dagster as dg
import yaml

REPO = Path(__file__).resolve().parents[2]
# An h100x2 deployment (spot in configs/fleet.yaml) and an l4x1 one (on-demand).
H100X2 = "llama-3.1-8b-instruct-h100x2-vllm-fp16-0123abcd"
L4X1 = "qwen2.5-0.5b-instruct-l4x1-vllm-bf16-89abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy_config(launcher: str) -> dict:
    """configs/deploy/<launcher>/dagster.yaml as a mapping."""
    return yaml.safe_load((REPO / "configs" / "deploy" / launcher / "dagster.yaml").read_text())


def launch_runs(instance: dg.DagsterInstance, keys: list[str], image: str) -> dict[str, dg.DagsterRun]:
    """Create and launch one benchmark_runs_job run per key through the instance's run
    launcher, from the real code location served with IMAGE; partition -> the launched run."""
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from pipeline.definitions import defs

    job = defs.resolve_job_def("benchmark_runs_job")
    origin = LoadableTargetOrigin(module_name="pipeline.definitions", working_directory=str(REPO))
    runs = {}
    with in_process_test_workspace(instance, origin, container_image=image) as workspace:
        location = workspace.get_code_location(workspace.code_location_names[0])
        remote = location.get_repository("__repository__").get_full_job("benchmark_runs_job")
        for key in keys:
            run = instance.create_run_for_job(
                job, tags=run_tags_for(key, instance), remote_job_origin=remote.get_remote_origin(),
                job_code_origin=remote.get_python_origin())
            instance.launch_run(run.run_id, workspace)
            runs[key] = instance.get_run_by_id(run.run_id)
    return runs


def run_tags_for(key: str, instance: dg.DagsterInstance) -> dict[str, str]:
    """The tags a sensor's or schedule's RunRequest for KEY resolves to on benchmark_runs_job."""
    from pipeline.definitions import defs

    job = defs.resolve_job_def("benchmark_runs_job")
    instance.add_dynamic_partitions("deployments", [key])
    return dict(dg.RunRequest(partition_key=key).with_resolved_tags_and_config(
        job, [], instance).tags)
