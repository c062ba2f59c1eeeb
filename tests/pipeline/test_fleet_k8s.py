"""Done-when (b): the Kubernetes Jobs of an h100x2 spot and an l4x1 on-demand partition carry
the right GPU limits, node selectors and tolerations. Built two ways: by dagster-k8s's
`K8sRunLauncher` (configured as configs/deploy/k8s/dagster.yaml) posting to a stand-in API
server, and by `construct_dagster_k8s_job` from the run's tags; both read back as the
`kubernetes` client's V1Job."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
import yaml
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from kubernetes.client import ApiClient, V1Job

from tests.pipeline.fleet_support import H100X2, L4X1, deploy_config, launch_runs, run_tags_for

IMAGE = "ghcr.io/example/servecat:test"
# partition -> (GPUs, node selector, toleration keys, vCPU request, memory)
EXPECTED = {
    H100X2: ("2", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                   "karpenter.sh/capacity-type": "spot"},
             ["nvidia.com/gpu", "servecat/spot"], "28", "400Gi"),
    L4X1: ("1", {"nvidia.com/gpu.product": "NVIDIA-L4", "karpenter.sh/capacity-type": "on-demand"},
           ["nvidia.com/gpu"], "3", "12Gi"),
}


class _Response:
    def __init__(self, data: str):
        self.data = data


def as_v1job(manifest: dict) -> V1Job:
    """MANIFEST (the JSON an API server receives) deserialised into the client's V1Job."""
    return ApiClient().deserialize(_Response(json.dumps(manifest)), "V1Job")


def check_job(job: V1Job, key: str) -> None:
    gpus, selector, toleration_keys, cpu, memory = EXPECTED[key]
    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.resources.limits == {"nvidia.com/gpu": gpus, "memory": memory}
    assert container.resources.requests == {"nvidia.com/gpu": gpus, "cpu": cpu, "memory": memory}
    assert pod.node_selector == selector
    assert [t.key for t in pod.tolerations] == toleration_keys
    assert all(t.effect == "NoSchedule" and t.operator == "Exists" for t in pod.tolerations)
    labels = job.spec.template.metadata.labels
    assert labels["servecat/gpus"] == gpus and labels["servecat/hardware_key"] in key


class _ApiServer(BaseHTTPRequestHandler):
    """Answers `POST .../jobs` like the API server (echoing the Job) and keeps each body."""

    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, body))
        reply = json.dumps(body).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def k8s_instance(tmp_path, monkeypatch):
    """An instance whose K8sRunLauncher is the shipped one, out of cluster: a kubeconfig that
    points at a local stand-in API server."""
    server = HTTPServer(("127.0.0.1", 0), _ApiServer)
    _ApiServer.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "servecat")
    monkeypatch.setenv("SERVECAT_FLEET", "configs/fleet.yaml")
    launcher = deploy_config("k8s")["run_launcher"]
    launcher["config"] |= {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    with dg.instance_for_test(overrides={"run_launcher": launcher},
                              temp_dir=str(tmp_path)) as instance:
        yield instance
    server.shutdown()


def test_launcher_posts_jobs_with_gpu_limits_selectors_and_tolerations(k8s_instance):
    runs = launch_runs(k8s_instance, [H100X2, L4X1], IMAGE)
    posted = {body["metadata"]["labels"]["dagster/run-id"]: (path, body)
              for path, body in _ApiServer.received}
    assert len(posted) == 2
    for key, run in runs.items():
        path, manifest = posted[run.run_id]
        assert path == "/apis/batch/v1/namespaces/servecat/jobs"
        job = as_v1job(manifest)
        check_job(job, key)
        [container] = job.spec.template.spec.containers
        assert container.image == IMAGE
        # Secrets arrive as envFrom a Secret: the manifest names it and holds no value.
        assert [e.secret_ref.name for e in container.env_from if e.secret_ref] == ["servecat-secrets"]
        assert [e.config_map_ref.name for e in container.env_from if e.config_map_ref] == [
            "servecat-env"]


@pytest.mark.parametrize("key", [H100X2, L4X1])
def test_constructed_job_from_run_tags(key, monkeypatch):
    monkeypatch.setenv("SERVECAT_FLEET", "configs/fleet.yaml")
    with dg.instance_for_test() as instance:
        tags = run_tags_for(key, instance)
    config = get_user_defined_k8s_config(tags)  # dagster-k8s validates the tag's schema
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image=IMAGE, dagster_home="/opt/dagster/dagster_home",
                            instance_config_map="dagster-instance"),
        args=["dagster", "api", "execute_run"], job_name="dagster-run-test",
        user_defined_k8s_config=config)
    check_job(as_v1job(ApiClient().sanitize_for_serialization(job)), key)
