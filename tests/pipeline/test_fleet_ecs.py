"""Done-when (a): runs of an h100x2 (spot) and an l4x1 (on-demand) partition, launched through
dagster-aws's `EcsRunLauncher` configured as configs/deploy/ecs/dagster.yaml, start two ECS
tasks in moto (server mode) that ask for the right GPUs, capacity provider and instance types,
with the run's environment and secrets by ARN only."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import dagster as dg
import pytest
from moto.server import ThreadedMotoServer

from tests.pipeline.fleet_support import H100X2, L4X1, deploy_config, free_port, launch_runs

SECRET = "rp-live-7f3a9c-do-not-leak"
PG_PASSWORD = "pg-live-5b21e8-do-not-leak"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/servecat:test"
PROVIDERS = ["servecat-h100-spot", "servecat-l4-on-demand", "servecat-cpu-on-demand"]


@pytest.fixture
def moto_url(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)  # every boto3 client, the launcher's too
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    yield url
    server.stop()


def _cluster() -> dict:
    """A cluster with GPU capacity providers, two container instances, and the daemon's task
    (the template of every run, as on a real deployment)."""
    ec2, ecs = boto3.client("ec2"), boto3.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # as awsvpc needs
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="servecat", Description="runs", VpcId=vpc)["GroupId"]
    cluster = ecs.create_cluster(clusterName="servecat")["cluster"]["clusterArn"]
    for name in PROVIDERS:
        ecs.create_capacity_provider(name=name, autoScalingGroupProvider={
            "autoScalingGroupArn": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:"
                                   f"0:autoScalingGroupName/{name}"})
    ecs.put_cluster_capacity_providers(cluster="servecat", capacityProviders=PROVIDERS,
                                       defaultCapacityProviderStrategy=[])
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    for instance_type in ("p5.48xlarge", "g6.xlarge"):
        iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType=instance_type,
                                SubnetId=subnet)["Instances"][0]["InstanceId"]
        ecs.register_container_instance(cluster="servecat",
                                        instanceIdentityDocument=json.dumps({"instanceId": iid}))
    ecs.register_task_definition(
        family="servecat-daemon", networkMode="awsvpc", requiresCompatibilities=["EC2", "FARGATE"],
        cpu="1024", memory="4096",
        containerDefinitions=[{"name": "daemon", "image": "servecat:daemon", "memory": 512,
                               "environment": [{"name": "DAGSTER_HOME", "value": "/opt/dagster"}]}])
    daemon = ecs.run_task(cluster="servecat", taskDefinition="servecat-daemon", launchType="FARGATE",
                          networkConfiguration={"awsvpcConfiguration": {
                              "subnets": [subnet], "securityGroups": [group]}})["tasks"][0]
    return {"cluster": cluster, "daemon": daemon["taskArn"], "subnet": subnet, "group": group}


class _Metadata(BaseHTTPRequestHandler):
    """ECS's task metadata endpoint (v4) as seen from inside the daemon's container."""

    answers: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps(self.answers[self.path.rstrip("/") or "/"]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def daemon_task(moto_url, monkeypatch):
    cluster = _cluster()
    _Metadata.answers = {"/": {"Name": "daemon"},
                         "/task": {"Cluster": cluster["cluster"], "TaskARN": cluster["daemon"]}}
    server = HTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{server.server_port}")
    yield cluster
    server.shutdown()


@pytest.fixture
def ecs_instance(daemon_task, monkeypatch, tmp_path):
    """A Dagster instance whose run launcher is configs/deploy/ecs/dagster.yaml's."""
    sm = boto3.client("secretsmanager")
    pg = sm.create_secret(Name="servecat/dagster-pg-password", SecretString=PG_PASSWORD)["ARN"]
    rp = sm.create_secret(Name="RUNPOD_API_KEY", SecretString=SECRET,
                          Tags=[{"Key": "servecat", "Value": "true"}])["ARN"]
    env = {"DAGSTER_PG_PASSWORD_SECRET_ARN": pg, "SERVECAT_STORE": "s3://servecat-results/prod",
           "SERVECAT_FLEET": "configs/fleet.yaml", "SERVECAT_MATRIX": "configs/full.yaml",
           "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000", "AWS_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    launcher = deploy_config("ecs")["run_launcher"]
    with dg.instance_for_test(overrides={"run_launcher": launcher},
                              temp_dir=str(tmp_path)) as instance:
        yield instance, {"pg": pg, "runpod": rp}


def test_two_hardware_types_start_two_tasks_on_their_gpus(ecs_instance):
    instance, arns = ecs_instance
    sent: list[dict] = []  # the RunTask requests, as the launcher's boto3 client sends them
    instance.run_launcher.ecs.meta.events.register(
        "provide-client-params.ecs.RunTask", lambda params, **_: sent.append(dict(params)))
    by_key = {k: r.tags for k, r in launch_runs(instance, [H100X2, L4X1], IMAGE).items()}
    ecs = boto3.client("ecs")
    tasks = {key: ecs.describe_tasks(cluster=tags["ecs/cluster"], tasks=[tags["ecs/task_arn"]],
                                     include=["TAGS"])["tasks"][0]
             for key, tags in by_key.items()}
    assert len({t["taskArn"] for t in tasks.values()}) == 2

    # hardware, GPUs, capacity provider, instance types, vCPUs and GiB (configs/hardware.yaml)
    expected = {H100X2: ("h100", "2", "servecat-h100-spot", "p5.*", 2 * 14, 2 * 200),
                L4X1: ("l4", "1", "servecat-l4-on-demand", "g6.*", 3, 12)}
    for key, (hardware, gpus, provider, instance_types, vcpus, memory_gb) in expected.items():
        task = tasks[key]
        assert task["capacityProviderName"] == provider
        [container] = task["overrides"]["containerOverrides"]
        assert container["name"] == "run"
        assert container["resourceRequirements"] == [{"type": "GPU", "value": gpus}]
        assert (task["overrides"]["cpu"], task["overrides"]["memory"]) == (
            str(vcpus * 1024), str(memory_gb * 1024))
        ecs_tags = {t["key"]: t["value"] for t in task["tags"]}
        assert (ecs_tags["servecat/hardware"], ecs_tags["servecat/gpus"]) == (hardware, gpus)
        assert ecs_tags["dagster/partition"] == key
        [request] = [r for r in sent if r["overrides"] == task["overrides"]]
        assert request["placementConstraints"] == [
            {"type": "memberOf", "expression": f"attribute:ecs.instance-type =~ {instance_types}"}]
        assert "launchType" not in request  # the capacity provider replaces the daemon's FARGATE
        assert request["networkConfiguration"]["awsvpcConfiguration"]["subnets"]
    # A spot run is retried after an interruption; an on-demand one is not.
    assert by_key[H100X2]["dagster/max_retries"] == "3" and "dagster/max_retries" not in by_key[L4X1]

    for task in tasks.values():
        definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])[
            "taskDefinition"]
        [container] = definition["containerDefinitions"]
        assert container["image"] == IMAGE
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["SERVECAT_STORE"] == "s3://servecat-results/prod"
        assert env["SERVECAT_FLEET"] == "configs/fleet.yaml"
        assert env["DAGSTER_RUN_JOB_NAME"] == "benchmark_runs_job"
        secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
        assert secrets == {"DAGSTER_PG_PASSWORD": arns["pg"], "RUNPOD_API_KEY": arns["runpod"]}
        shown = json.dumps([definition, task, sent], default=str)
        assert SECRET not in shown and PG_PASSWORD not in shown
