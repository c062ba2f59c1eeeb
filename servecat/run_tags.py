"""The tags of a deployment's benchmark run: what hardware it needs and where it may run.

`servecat/*` tags say what the run needs (the run queue's limits key on them, see
`servecat.fleet_limits`); `ecs/*` tags are read by dagster-aws's `EcsRunLauncher` and
`dagster-k8s/config` by dagster-k8s's `K8sRunLauncher`. Pure functions of a deployment
mapping (a matrix row, or a parsed deployment key), the hardware table and the fleet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from servecat.fleet import REMOTE_ENGINES, Capacity, Fleet
from servecat.hardware import Hardware

HARDWARE_TAG = "servecat/hardware"
GPUS_TAG = "servecat/gpus"
CAPACITY_TAG = "servecat/capacity"
HARDWARE_KEY_TAG = "servecat/hardware_key"
QUOTA_TAG = "servecat/quota"
MAX_RETRIES_TAG = "dagster/max_retries"
# Set by the nightly backfill of stale results (pipeline/backfills.py): workloads measured
# before this ISO time are measured again; those measured since count as finished.
REMEASURE_TAG = "servecat/remeasure_before"
ECS_CONTAINER_OVERRIDES = "ecs/container_overrides"
ECS_CPU, ECS_MEMORY = "ecs/cpu", "ecs/memory"
ECS_RUN_TASK_KWARGS = "ecs/run_task_kwargs"
K8S_CONFIG = "dagster-k8s/config"


@dataclass(frozen=True, slots=True)
class Placement:
    """What one run occupies: GPUs of the fleet (none for a remote engine) and a host share."""

    hardware: str  # hardware type of the deployment
    gpu_count: int  # GPUs of the deployment (at the provider for a remote engine)
    capacity: Capacity
    provider: str | None  # `runpod` / `openai` for a remote engine, else None
    host: Hardware  # the hardware table entry that sizes the run's host
    fleet_gpus: int  # GPUs the run takes from the fleet

    @property
    def hardware_tag(self) -> str:
        """The fleet's GPU type, or `<provider>-<type>` when the GPUs are a provider's."""
        return f"{self.provider}-{self.hardware}" if self.provider else self.hardware


def placement(deployment: Mapping, table: Mapping[str, Hardware], fleet: Fleet) -> Placement:
    """Where DEPLOYMENT's run goes; `capacity` in the mapping overrides the fleet's."""
    name, engine = str(deployment["hardware"]), str(deployment["engine"])
    if name not in table:
        raise ValueError(f"deployment {deployment.get('deployment', '?')}: hardware {name!r} "
                         f"is not in the hardware table ({', '.join(table)})")
    count = int(deployment["gpu_count"])
    if engine in REMOTE_ENGINES:
        # The run only drives load at the provider: a CPU host, bought on demand.
        return Placement(name, count, "on-demand", engine, table.get("cpu", table[name]), 0)
    capacity = deployment.get("capacity") or fleet.capacity(name)
    if capacity not in ("spot", "on-demand"):
        raise ValueError(f"deployment {deployment.get('deployment', '?')}: capacity "
                         f"{capacity!r} is not spot or on-demand")
    hw = table[name]
    return Placement(name, count, capacity, None, hw, count if hw.is_gpu else 0)


def run_tags(deployment: Mapping, table: Mapping[str, Hardware], fleet: Fleet) -> dict[str, str]:
    """Every tag of DEPLOYMENT's run: servecat's, plus those of the fleet's launchers."""
    p = placement(deployment, table, fleet)
    tags = servecat_tags(p)
    if p.capacity == "spot" and fleet.spot_max_retries:
        tags[MAX_RETRIES_TAG] = str(fleet.spot_max_retries)
    if "ecs" in fleet.launchers:
        tags |= ecs_tags(p, fleet)
    if "kubernetes" in fleet.launchers:
        tags |= k8s_tags(p, fleet)
    return tags


def servecat_tags(p: Placement) -> dict[str, str]:
    """What the run needs; the run queue's concurrency limits key on these."""
    tags = {HARDWARE_TAG: p.hardware_tag, GPUS_TAG: str(p.gpu_count), CAPACITY_TAG: p.capacity}
    if p.provider:
        tags[QUOTA_TAG] = p.provider
    else:
        tags[HARDWARE_KEY_TAG] = f"{p.hardware}x{p.gpu_count}"
    return tags


def host_size(p: Placement) -> tuple[float, float]:
    """(vCPUs, GiB of memory) of the run's host share, from the hardware table."""
    h = p.host
    if h.host_vcpus_per_gpu is None or h.host_memory_gb_per_gpu is None:
        raise ValueError(f"hardware {h.name!r} has no host_vcpus_per_gpu / "
                         f"host_memory_gb_per_gpu in the hardware table: needed to size its run")
    share = max(p.fleet_gpus, 1)
    return h.host_vcpus_per_gpu * share, h.host_memory_gb_per_gpu * share


def ecs_tags(p: Placement, fleet: Fleet) -> dict[str, str]:
    """`EcsRunLauncher` tags: GPUs, task size, capacity provider and instance types."""
    vcpus, memory_gb = host_size(p)
    host = p.host.name  # the GPU type, or `cpu` for the host of a remote engine's run
    kwargs: dict = {"capacityProviderStrategy": [{
        "capacityProvider": fleet.ecs.capacity_provider.format(hardware=host,
                                                               capacity=p.capacity),
        "weight": 1}]}
    pattern = fleet.ecs.instance_types.get(host)
    if pattern:
        kwargs["placementConstraints"] = [{"type": "memberOf",
                                           "expression": f"attribute:ecs.instance-type =~ {pattern}"}]
    tags = {ECS_CPU: str(round(vcpus * 1024)), ECS_MEMORY: str(round(memory_gb * 1024)),
            ECS_RUN_TASK_KWARGS: _json(kwargs)}
    if p.fleet_gpus:
        tags[ECS_CONTAINER_OVERRIDES] = _json(
            {"resourceRequirements": [{"type": "GPU", "value": str(p.fleet_gpus)}]})
    return tags


def k8s_tags(p: Placement, fleet: Fleet) -> dict[str, str]:
    """`K8sRunLauncher`'s `dagster-k8s/config`: GPU limits, node selector, tolerations."""
    k8s = fleet.kubernetes
    vcpus, memory_gb = host_size(p)
    requests = {"cpu": f"{vcpus:g}", "memory": f"{memory_gb:g}Gi"}
    limits = {"memory": requests["memory"]}  # no CPU limit: throttling would skew latencies
    selector = dict(k8s.capacity_node_selector.get(p.capacity, {}))
    tolerations = list(k8s.capacity_tolerations.get(p.capacity, []))
    if p.fleet_gpus:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(p.fleet_gpus)
        if p.host.gpu_names:
            selector[k8s.gpu_product_label] = p.host.gpu_names[0].replace(" ", "-")
        tolerations = [*k8s.gpu_tolerations, *tolerations]
    config = {
        "container_config": {"resources": {"requests": requests, "limits": limits}},
        "pod_spec_config": {"node_selector": selector, "tolerations": tolerations},
        "pod_template_spec_metadata": {"labels": servecat_tags(p)},
    }
    return {K8S_CONFIG: _json(config)}


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
