"""The Dagster resource that hands out targets; secrets arrive through dg.EnvVar."""

from __future__ import annotations

import dagster as dg

from resources.runpod import RunPodConfig
from resources.targets import Targets


class TargetsResource(dg.ConfigurableResource):
    """Config for starting or reaching deployment servers.

    `openai_api_key` is meant to be `dg.EnvVar("SERVECAT_OPENAI_API_KEY")`: Dagster shows the
    variable's name in the UI, never its value.
    """

    openai_base_url: str = ""
    openai_api_key: str = ""
    health_timeout_s: float = 300.0
    # engine -> launch command template (placeholders: see resources.targets.command_target)
    commands: dict[str, str] = {}
    # engine `runpod`; its api_key is meant to be dg.EnvVar("RUNPOD_API_KEY")
    runpod: RunPodConfig = RunPodConfig()
    # A DCGM exporter's /metrics for GPU telemetry; else nvidia-smi (bench/telemetry.py)
    dcgm_url: str = ""

    def targets(self) -> Targets:
        return Targets(self.openai_base_url or None, self.openai_api_key or None,
                       self.health_timeout_s, self.commands, runpod=self.runpod)
