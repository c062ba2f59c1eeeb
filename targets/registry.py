"""Targets: the Target of each deployment, by its engine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from servecat.deployment import Deployment
from servecat.host_check import HardwareMismatch, check_host, provenance
from targets.engine_commands import DEFAULT_COMMANDS
from targets.target import (
    HOST_FACTS,
    ExistingTarget,
    Target,
    TargetError,
    builtin_target,
    command_target,
)

if TYPE_CHECKING:
    from targets.runpod import RunPodSettings


class Targets:
    """Make the Target of a deployment (a matrix row), by its engine.

    `commands` maps an engine name to a launch command template (see `command_target`): a
    deployment of that engine gets a managed server started from it."""

    def __init__(self, openai_base_url: str | None = None, openai_api_key: str | None = None,
                 health_timeout_s: float = 300.0, commands: Mapping[str, str] | None = None,
                 runpod: RunPodSettings | None = None):
        self.openai_base_url, self._openai_api_key = openai_base_url, openai_api_key
        self.health_timeout_s = health_timeout_s
        self.commands = dict(commands or {})
        self.runpod = runpod

    def for_deployment(self, deployment: Deployment, log_path: Path | None = None) -> Target:
        """The deployment's target; a server started on this host is checked first to have
        the deployment's GPUs (type and count), else TargetError names both."""
        engine = deployment.engine
        local = bool(self.commands.get(engine) or DEFAULT_COMMANDS.get(engine)) \
            or engine in ("builtin", "vllm")
        facts: dict[str, object] = {}
        if local:
            hardware, count = deployment.hardware, deployment.gpu_count
            try:
                host = check_host(hardware, count)
            except HardwareMismatch as exc:
                raise TargetError(f"this host cannot run {deployment.key}"
                                  f": {exc}") from None
            facts = {k: v for k, v in provenance(host, hardware, count).items()
                     if k in HOST_FACTS}
        target = self._target(deployment, engine, log_path)
        target.host_facts = facts
        return target

    def _target(self, deployment: Deployment, engine: str, log_path: Path | None) -> Target:
        if engine == "vllm":  # a command of its own still gets vLLM's placeholders and env
            from targets.vllm import vllm_target

            return vllm_target(deployment, log_path, max(self.health_timeout_s, 300.0),
                               command=self.commands.get(engine))
        command = self.commands.get(engine) or DEFAULT_COMMANDS.get(engine)
        if command:
            return command_target(command, deployment, log_path, self.health_timeout_s)
        if engine == "builtin":
            return builtin_target(deployment, log_path, self.health_timeout_s)
        if engine == "openai":
            if not self.openai_base_url:
                raise TargetError("engine openai needs a base URL: set SERVECAT_OPENAI_BASE_URL "
                                  "(or the targets resource's openai_base_url)")
            # The URL may be a template per deployment, e.g. http://{model}.internal:8000/v1.
            url = self.openai_base_url.format(**deployment.values())
            return ExistingTarget(url, deployment.model,
                                  self._openai_api_key, self.health_timeout_s)
        if engine == "runpod":
            if self.runpod is None or not self.runpod.api_key:
                raise TargetError("engine runpod needs a RunPod API key: set RUNPOD_API_KEY")
            from targets.runpod import runpod_target

            return runpod_target(self.runpod, deployment)
        raise TargetError(f"engine {engine} has no target: give it a launch command in "
                          f"SERVECAT_TARGET_COMMANDS (JSON engine -> command template)")
