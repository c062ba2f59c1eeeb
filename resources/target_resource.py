"""The Dagster resource that hands out targets; secrets arrive through dg.EnvVar."""

from __future__ import annotations

import dagster as dg

from targets.registry import Targets
from targets.runpod import (
    POD_IMAGE,
    POD_URL_TEMPLATE,
    REST_URL,
    SERVERLESS_URL,
    WORKER_IMAGE,
    RunPodClient,
)


class RunPodConfig(dg.Config):
    """How `runpod` deployments run. `api_key` is meant to be `dg.EnvVar("RUNPOD_API_KEY")`."""

    api_key: str = ""
    rest_url: str = REST_URL
    serverless_url: str = SERVERLESS_URL
    mode: str = "serverless"  # or "pod"
    endpoint_id: str = ""  # reuse this endpoint (never created, never deleted)
    template_id: str = ""  # use this serverless template as is (else one per deployment)
    worker_image: str = WORKER_IMAGE
    pod_image: str = POD_IMAGE
    pod_port: int = 8000
    pod_url_template: str = POD_URL_TEMPLATE
    interruptible: bool = False  # pods: spot
    workers_min: int = 1
    workers_max: int = 1
    idle_timeout_s: int = 60
    flashboot: bool = True
    container_disk_gb: int = 50
    gpu_types: dict[str, list[str]] = {}  # hardware -> gpuTypeIds, over GPU_TYPE_IDS
    health_timeout_s: float = 1200.0
    poll_s: float = 2.0
    orphan_age_s: float = 3 * 3600.0  # the orphan sensor deletes servecat resources older

    def configured(self) -> bool:
        return bool(self.api_key)

    def client(self) -> RunPodClient:
        return RunPodClient(self.api_key, self.rest_url, self.serverless_url)


class TargetsResource(dg.ConfigurableResource):
    """Config for starting or reaching deployment servers.

    `openai_api_key` is meant to be `dg.EnvVar("SERVECAT_OPENAI_API_KEY")`: Dagster shows the
    variable's name in the UI, never its value.
    """

    openai_base_url: str = ""
    openai_api_key: str = ""
    health_timeout_s: float = 300.0
    # engine -> launch command template (placeholders: see targets.target.command_target)
    commands: dict[str, str] = {}
    # engine `runpod`; its api_key is meant to be dg.EnvVar("RUNPOD_API_KEY")
    runpod: RunPodConfig = RunPodConfig()
    # A DCGM exporter's /metrics for GPU telemetry; else nvidia-smi (bench/telemetry.py)
    dcgm_url: str = ""

    def targets(self) -> Targets:
        return Targets(self.openai_base_url or None, self.openai_api_key or None,
                       self.health_timeout_s, self.commands, runpod=self.runpod)
