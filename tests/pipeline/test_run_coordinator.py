"""A benchmark run launched outside benchmark_runs_job (an asset backfill, "Materialize" in the
UI: Dagster's implicit asset job) is queued with its partition's hardware tags all the same."""

from __future__ import annotations

import shutil

import dagster as dg

from tests.pipeline.daemon_support import code_location
from tests.pipeline.fleet_support import H100X2

REPO_CONFIG = "configs/deploy/local/dagster.yaml"


def _queue(instance, workspace, repo, tags: dict[str, str], assets: set) -> dg.DagsterRun:
    from pipeline.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    remote = repo.get_full_job(job.name)
    run = instance.create_run_for_job(
        job, asset_selection=frozenset(assets), tags=tags,
        remote_job_origin=remote.get_remote_origin(), job_code_origin=remote.get_python_origin())
    instance.submit_run(run.run_id, workspace)
    return instance.get_run_by_id(run.run_id)


def test_an_asset_job_run_of_a_partition_is_queued_with_its_hardware_tags(tmp_path, monkeypatch):
    from tests.pipeline.daemon_support import REPO

    monkeypatch.setenv("SERVECAT_FLEET", "configs/fleet.yaml")
    shutil.copy(REPO / REPO_CONFIG, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance, \
            code_location(instance) as (workspace, repo):
        instance.add_dynamic_partitions("deployments", [H100X2])
        run = _queue(instance, workspace, repo, {"dagster/partition": H100X2},
                     {dg.AssetKey("benchmark_runs")})
        assert run.status == dg.DagsterRunStatus.QUEUED
        assert run.tags["servecat/hardware"] == "h100" and run.tags["servecat/gpus"] == "2"
        assert run.tags["servecat/hardware_key"] == "h100x2"
        # A tag the launcher already gave is kept; a run of other assets is left alone.
        kept = _queue(instance, workspace, repo,
                      {"dagster/partition": H100X2, "servecat/capacity": "on-demand"},
                      {dg.AssetKey("benchmark_runs")})
        assert kept.tags["servecat/capacity"] == "on-demand"
        other = _queue(instance, workspace, repo, {}, {dg.AssetKey("benchmark_matrix")})
        assert other.status == dg.DagsterRunStatus.QUEUED
        assert not any(k.startswith("servecat/") for k in other.tags)
