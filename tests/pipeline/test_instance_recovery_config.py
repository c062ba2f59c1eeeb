"""The shipped instances (configs/deploy/*/dagster.yaml) recover from a lost run worker without
a person: run monitoring frees what a dead run holds, run retries start it again (only for a
lost worker, never for a failed workload), and the local instance loads with both on."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from tests.pipeline.fleet_support import REPO, deploy_config


@pytest.mark.parametrize("deploy", ["local", "ecs", "k8s"])
def test_monitoring_and_retries_are_on(deploy):
    config = deploy_config(deploy)
    monitoring, retries = config["run_monitoring"], config["run_retries"]
    assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0
    # A dead worker's run fails and is retried as a new run; none is resumed in place.
    assert monitoring["max_resume_run_attempts"] == 0
    assert retries["enabled"] and retries["max_retries"] >= 1
    assert retries["retry_on_asset_or_op_failure"] is False


def test_the_local_instance_runs_the_monitoring_and_retry_daemons(tmp_path):
    shutil.copy(REPO / "configs/deploy/local/dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2
        assert {"MONITORING", "EVENT_LOG_CONSUMER"} <= set(instance.get_required_daemon_types())
