"""The shipped Dagster instances (configs/deploy/*/dagster.yaml): their run-queue limits are
the ones their fleet file generates, Dagster accepts each, and every run of
benchmark_runs_job (what the request sensor and the schedule create) carries its tags."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.instance.config import dagster_instance_config

from cli.main import main
from servecat.fleet_limits import regenerate
from tests.pipeline.fleet_support import H100X2, REPO, run_tags_for

DEPLOYS = ["local", "ecs", "k8s"]


@pytest.mark.parametrize("deploy", DEPLOYS)
def test_shipped_limits_match_their_fleet_file(deploy):
    current, regenerated = regenerate(REPO / "configs" / "deploy" / deploy / "dagster.yaml")
    assert current == regenerated, (
        f"configs/deploy/{deploy}/dagster.yaml is out of date with its fleet file: run "
        f"`servecat fleet limits --write configs/deploy/*/dagster.yaml`")


@pytest.mark.parametrize("deploy", DEPLOYS)
def test_dagster_accepts_each_instance_config(deploy, monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_DB", "DAGSTER_K8S_NAMESPACE", "DAGSTER_PG_PASSWORD_SECRET_ARN"):
        monkeypatch.setenv(name, "x")
    config, _ = dagster_instance_config(str(REPO / "configs" / "deploy" / deploy))
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "servecat/quota", "value": "runpod", "limit": 8 if deploy != "local" else 1
            } in limits


def test_local_instance_queues_one_cpu_run_at_a_time(tmp_path):
    shutil.copy(REPO / "configs/deploy/local/dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert {"key": "servecat/hardware", "value": "cpu", "limit": 1} in [
            dict(limit) for limit in queue.tag_concurrency_limits]
        assert type(instance.run_coordinator).__name__ == "PartitionTagsRunCoordinator"
    assert "configs/deploy/local/dagster.yaml" in (REPO / "Makefile").read_text()


def test_every_runs_job_run_request_carries_hardware_tags(monkeypatch):
    monkeypatch.setenv("SERVECAT_FLEET", "configs/fleet.yaml")
    with dg.instance_for_test() as instance:
        tags = run_tags_for(H100X2, instance)
    assert tags["servecat/hardware"] == "h100" and tags["servecat/gpus"] == "2"
    assert tags["dagster/partition"] == H100X2 and "ecs/run_task_kwargs" in tags


def test_fleet_limits_cli_checks_and_writes(tmp_path):
    copy = tmp_path / "dagster.yaml"
    text = (REPO / "configs/deploy/ecs/dagster.yaml").read_text()
    copy.write_text(text.replace("limit: 16}", "limit: 99}"))
    runner = CliRunner()
    stale = runner.invoke(main, ["fleet", "limits", "--check", str(copy)])
    assert stale.exit_code == 1 and "out of date" in stale.output
    assert runner.invoke(main, ["fleet", "limits", "--write", str(copy)]).exit_code == 0
    assert copy.read_text() == text
    printed = runner.invoke(main, ["fleet", "limits"])
    assert "{key: servecat/hardware, value: h100, limit: 16}" in printed.output
