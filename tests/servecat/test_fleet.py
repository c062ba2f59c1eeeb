"""The fleet file, deployment keys, run tags and the run queue's limits (no Dagster)."""

from __future__ import annotations

import json

import pytest
import yaml

from servecat.deployment_key import parse_deployment_key
from servecat.errors import SpecError
from servecat.fleet import DEFAULT_FLEET, LOCAL_FLEET, load_fleet
from servecat.fleet_limits import TagLimit, render, tag_limits
from servecat.hardware import load_hardware
from servecat.run_tags import placement, run_tags

TABLE = load_hardware()
FLEET = load_fleet(DEFAULT_FLEET, TABLE)


def deployment(hardware: str, gpus: int, engine: str = "vllm", **extra) -> dict:
    return {"hardware": hardware, "gpu_count": gpus, "engine": engine, **extra}


def test_keys_parse_back_even_with_dashes_and_x_in_names():
    key = parse_deployment_key("mixtral-8x7b-instruct-a100-80gbx4-sglang-int4-deadbeef",
                               TABLE)
    assert (key.model, key.hardware, key.gpu_count, key.engine, key.quantization) == (
        "mixtral-8x7b-instruct", "a100-80gb", 4, "sglang", "int4")
    assert key.hardware_key == "a100-80gbx4"
    with pytest.raises(ValueError, match="no known hardware before 'x2'.*known: a100-40gb"):
        parse_deployment_key("m-tpu-v5x2-vllm-bf16-deadbeef", TABLE)
    with pytest.raises(ValueError, match="not <model>-<hardware>x<gpus>"):
        parse_deployment_key("not-a-deployment", TABLE)


def test_spot_gpu_run_tags_for_both_launchers():
    tags = run_tags(deployment("h100", 2), TABLE, FLEET)
    assert {k: tags[k] for k in ("servecat/hardware", "servecat/gpus", "servecat/capacity",
                                 "servecat/hardware_key", "dagster/max_retries")} == {
        "servecat/hardware": "h100", "servecat/gpus": "2", "servecat/capacity": "spot",
        "servecat/hardware_key": "h100x2", "dagster/max_retries": "3"}
    assert json.loads(tags["ecs/container_overrides"]) == {
        "resourceRequirements": [{"type": "GPU", "value": "2"}]}
    assert (tags["ecs/cpu"], tags["ecs/memory"]) == (str(28 * 1024), str(400 * 1024))
    kwargs = json.loads(tags["ecs/run_task_kwargs"])
    assert kwargs["capacityProviderStrategy"] == [
        {"capacityProvider": "servecat-h100-spot", "weight": 1}]
    k8s = json.loads(tags["dagster-k8s/config"])
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert k8s["pod_spec_config"]["node_selector"]["karpenter.sh/capacity-type"] == "spot"


def test_on_demand_cpu_and_capacity_override():
    tags = run_tags(deployment("cpu", 1, "builtin"), TABLE, FLEET)
    assert tags["servecat/capacity"] == "on-demand" and "dagster/max_retries" not in tags
    assert "ecs/container_overrides" not in tags  # no GPU on a CPU host
    k8s = json.loads(tags["dagster-k8s/config"])
    assert "nvidia.com/gpu" not in k8s["container_config"]["resources"]["limits"]
    assert k8s["pod_spec_config"]["tolerations"] == []
    spot = run_tags(deployment("l4", 1, capacity="spot"), TABLE, FLEET)
    assert spot["servecat/capacity"] == "spot" and "servecat-l4-spot" in spot["ecs/run_task_kwargs"]
    with pytest.raises(ValueError, match="capacity 'cheap' is not spot or on-demand"):
        run_tags(deployment("l4", 1, capacity="cheap"), TABLE, FLEET)


def test_remote_engines_take_a_quota_slot_not_the_fleets_gpus():
    tags = run_tags(deployment("h100", 4, "runpod"), TABLE, FLEET)
    assert tags["servecat/hardware"] == "runpod-h100" and tags["servecat/quota"] == "runpod"
    assert tags["servecat/gpus"] == "4" and "servecat/hardware_key" not in tags
    assert "ecs/container_overrides" not in tags
    assert "servecat-cpu-on-demand" in tags["ecs/run_task_kwargs"]
    assert placement(deployment("l4", 1, "openai"), TABLE, FLEET).fleet_gpus == 0


def test_local_fleet_adds_no_launcher_tags():
    local = load_fleet(LOCAL_FLEET, TABLE)
    assert set(run_tags(deployment("cpu", 1, "builtin"), TABLE, local)) == {
        "servecat/hardware", "servecat/gpus", "servecat/capacity", "servecat/hardware_key"}


def test_limits_one_run_per_gpu_and_quota():
    limits = tag_limits(FLEET, TABLE)
    assert TagLimit("servecat/hardware", "h100", 16) in limits
    assert TagLimit("servecat/hardware_key", "h100x8", 2) in limits
    assert TagLimit("servecat/hardware", "a100-40gb", 0) in limits  # not in the fleet: waits
    assert TagLimit("servecat/quota", "runpod", 8) in limits
    block = yaml.safe_load(render(FLEET, TABLE, "configs/fleet.yaml"))
    assert block["concurrency"]["runs"]["tag_concurrency_limits"][0] == {
        "key": "servecat/hardware", "value": "l4", "limit": 8}


def test_fleet_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("name: x\nhardware:\n  h900: {gpus: 2}\n")
    with pytest.raises(SpecError, match=r"fleet.yaml: hardware.h900: unknown hardware 'h900'"):
        load_fleet(bad, TABLE)
    bad.write_text("name: x\nhardware:\n  h100: {gpus: 2, capacity: cheap}\n")
    with pytest.raises(SpecError, match=r"hardware.h100.capacity: 'cheap' is not one of spot"):
        load_fleet(bad, TABLE)
    bad.write_text("name: x\nquotas: {runpod: -1}\n")
    with pytest.raises(SpecError, match=r"quotas.runpod: "):
        load_fleet(bad, TABLE)
    bad.write_text("name: x\necs: {capacity_provider: 'gpu-{type}'}\n")
    with pytest.raises(SpecError, match=r"ecs.capacity_provider: 'gpu-\{type\}': only \{hardware\}"):
        load_fleet(bad, TABLE)
