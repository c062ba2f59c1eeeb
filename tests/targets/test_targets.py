"""Targets: launch-command templates, URL templates, health failures, cleanup."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from servecat.deployment import Deployment
from targets.engine_commands import DEFAULT_COMMANDS
from targets.registry import Targets
from targets.target import ExistingTarget, TargetError, command_target
from tests.pipeline.support import scripted_command

ROW = {"deployment": "m-cpux1-tgi-bf16-0", "engine": "tgi", "model": "m", "model_id": "org/m",
       "quantization": "bf16", "hardware": "cpu", "gpu_count": 1,
       "max_num_seqs": 64, "max_num_batched_tokens": float("nan"), "tensor_parallel_size": 2}


def dep(row: dict) -> Deployment:
    return Deployment.from_row(row)


def test_templates_render_every_flag():
    target = Targets().for_deployment(dep(ROW))
    assert target.argv[:3] == ["text-generation-launcher", "--model-id", "org/m"]
    assert "--num-shard" in target.argv and target.argv[target.argv.index("--num-shard") + 1] == "2"
    assert target.argv[target.argv.index("--dtype") + 1] == "bfloat16"
    for engine in DEFAULT_COMMANDS:
        assert Targets().for_deployment(dep(ROW | {"engine": engine})).port > 0
    with pytest.raises(TargetError, match="unknown placeholder 'nope'"):
        command_target("serve --x {nope}", dep(ROW))
    empty = command_target("serve {quantization_flag} --port {port}", dep(ROW),
                           extra={"quantization_flag": ""})
    assert empty.argv == ["serve", "--port", str(empty.port)]


def test_a_vllm_command_of_ones_own_keeps_vllms_placeholders_and_env(monkeypatch, tmp_path):
    python = tmp_path / "bin/python"
    python.parent.mkdir()
    python.touch()
    monkeypatch.setenv("SERVECAT_VLLM_PYTHON", str(python))
    from targets.vllm import DEFAULT_COMMAND

    row = ROW | {"engine": "vllm", "kv_cache_gb": 2.0}
    target = Targets(commands={"vllm": DEFAULT_COMMAND + " --enforce-eager"}).for_deployment(
        dep(row))
    assert target.argv[0] == str(python) and target.argv[-1] == "--enforce-eager"
    assert target.argv[target.argv.index("--max-num-batched-tokens") + 1] == "8192"
    assert target.env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_a_host_without_the_deployments_gpus_fails_before_starting(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # this CPU host: no nvidia-smi at all
    for engine in ("builtin", "vllm", "tgi"):
        row = ROW | {"engine": engine, "hardware": "h100", "gpu_count": 2,
                     "deployment": f"m-h100x2-{engine}"}
        with pytest.raises(TargetError) as err:
            Targets().for_deployment(dep(row))
        assert f"this host cannot run m-h100x2-{engine}" in str(err.value)
        assert "h100x2" in str(err.value) and "found no NVIDIA GPU" in str(err.value)
    # The CPU host runs `cpu` deployments; remote engines are not checked against this host.
    assert Targets().for_deployment(dep(ROW)).info() == {
        "gpu_name": None, "gpu_count": 0, "gpu_memory_mib": None, "driver_version": None,
        "cuda_version": None}
    remote = Targets(openai_base_url="http://127.0.0.1:9/v1")
    assert remote.for_deployment(dep(ROW | {"engine": "openai", "hardware": "h100"})).info() == {}


def test_managed_server_starts_serves_and_is_gone_after(tiny_model):
    target = command_target(scripted_command({"seed": 99123}), dep(ROW))
    with target:
        assert httpx.get(target.health_url()).status_code == 200
        assert target.endpoint().base_url.endswith(f":{target.port}/v1")
    assert not subprocess.run(["pgrep", "-f", "99123"], capture_output=True).stdout


def test_server_that_exits_is_a_clear_error():
    target = command_target("{python} -c 'import sys; print(\"boom\"); sys.exit(7)'", dep(ROW))
    with pytest.raises(TargetError, match=r"exited with code 7[\s\S]*boom"):
        target.__enter__()


def test_openai_url_template_and_missing_url():
    target = Targets(openai_base_url="http://127.0.0.1:9/{model}/v1").for_deployment(
        dep(ROW | {"engine": "openai"}))
    assert isinstance(target, ExistingTarget) and target.base_url == "http://127.0.0.1:9/m/v1"
    with pytest.raises(TargetError, match="SERVECAT_OPENAI_BASE_URL"):
        Targets().for_deployment(dep(ROW | {"engine": "openai"}))
    with pytest.raises(TargetError, match="not healthy after 1 s"):
        ExistingTarget("http://127.0.0.1:9/v1", "m", health_timeout_s=1).start()
