"""The one place that chooses the environment: the embedded default or production.

| variable | default | meaning |
| --- | --- | --- |
| SERVECAT_STORE | .servecat/store | result store root: a folder or s3://bucket/prefix |
| SERVECAT_SENSOR_INTERVAL_S | unset | seconds between ticks of the request and catalog-automation sensors (tests use 2) |
| SERVECAT_S3_ENDPOINT_URL | (AWS) | any S3-compatible endpoint (MinIO, moto, R2, ...) |
| SERVECAT_RESULTS_DB | .servecat/results.duckdb | the DuckDB file of `benchmark_results` |
| MLFLOW_TRACKING_URI | sqlite:///.servecat/mlflow/mlflow.db | MLflow tracking store |
| SERVECAT_OPENAI_BASE_URL / _API_KEY | unset | the server of `openai` deployments |
| SERVECAT_TARGET_COMMANDS | {} | JSON: engine -> launch command template of a managed server |
| RUNPOD_API_KEY | unset | RunPod API key (engine `runpod`; read through dg.EnvVar only) |
| SERVECAT_RUNPOD_REST_URL / _SERVERLESS_URL | RunPod's | RunPod REST v1 and serverless bases |
| SERVECAT_RUNPOD_MODE | serverless | `serverless` endpoint or `pod` |
| SERVECAT_RUNPOD_TEMPLATE_ID / _ENDPOINT_ID | unset | use this template / reuse this endpoint |
| SERVECAT_RUNPOD_INTERRUPTIBLE | 0 | pods: 1 for spot (interruptible) |
| SERVECAT_FLEET | configs/deploy/local/fleet.yaml | the fleet: GPUs, quotas, placement of runs |
| SERVECAT_DCGM_URL | unset | a DCGM exporter's /metrics for GPU telemetry (else nvidia-smi) |
"""

from __future__ import annotations

import json
import os

import dagster as dg

from resources.store import ResultStore
from resources.target_resource import RunPodConfig, TargetsResource
from resources.tracking import Tracking
from resources.warehouse import Warehouse
from servecat.fleet import LOCAL_FLEET
from targets.runpod import REST_URL, SERVERLESS_URL


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def resources() -> dict:
    """Resources from the environment; secrets only as dg.EnvVar (names, never values)."""
    api_key = (dg.EnvVar("SERVECAT_OPENAI_API_KEY") if _env("SERVECAT_OPENAI_API_KEY") else "")
    return {
        "store": ResultStore(root=_env("SERVECAT_STORE", ".servecat/store"),
                             s3_endpoint_url=_env("SERVECAT_S3_ENDPOINT_URL"),
                             s3_region=_env("AWS_REGION", "us-east-1")),
        "targets": TargetsResource(openai_base_url=_env("SERVECAT_OPENAI_BASE_URL"),
                                   openai_api_key=api_key,
                                   commands=json.loads(_env("SERVECAT_TARGET_COMMANDS", "{}")),
                                   runpod=_runpod(), dcgm_url=_env("SERVECAT_DCGM_URL")),
        "tracking": Tracking(),
        "warehouse": Warehouse(database=_env("SERVECAT_RESULTS_DB", ".servecat/results.duckdb")),
    }


def _runpod() -> RunPodConfig:
    return RunPodConfig(
        api_key=dg.EnvVar("RUNPOD_API_KEY") if _env("RUNPOD_API_KEY") else "",
        rest_url=_env("SERVECAT_RUNPOD_REST_URL", REST_URL),
        serverless_url=_env("SERVECAT_RUNPOD_SERVERLESS_URL", SERVERLESS_URL),
        mode=_env("SERVECAT_RUNPOD_MODE", "serverless"),
        template_id=_env("SERVECAT_RUNPOD_TEMPLATE_ID"), endpoint_id=_env("SERVECAT_RUNPOD_ENDPOINT_ID"),
        interruptible=_env("SERVECAT_RUNPOD_INTERRUPTIBLE", "0") in ("1", "true", "yes"))


def fleet_file() -> str:
    """The fleet file whose GPUs, quotas and placement the runs' tags follow."""
    return _env("SERVECAT_FLEET", str(LOCAL_FLEET))
