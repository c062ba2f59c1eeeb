"""The tags of each `benchmark_runs_job` run, from its partition alone: the hardware it needs
and, for the fleet's launchers (ECS, Kubernetes), where it may run (servecat/run_tags.py)."""

from __future__ import annotations

from dataclasses import asdict

from pipeline.environment import fleet_file
from servecat.deployment_key import parse_deployment_key
from servecat.fleet import load_fleet
from servecat.hardware import load_hardware
from servecat.run_tags import run_tags


def partition_run_tags(partition_key: str) -> dict[str, str]:
    """Tags for the run of deployment PARTITION_KEY under the fleet of SERVECAT_FLEET."""
    table = load_hardware()
    fleet = load_fleet(fleet_file(), table)
    return run_tags(asdict(parse_deployment_key(partition_key, table)), table, fleet)
