"""Engine `runpod` against a local fake of RunPod's REST and serverless APIs (127.0.0.1 only):
create -> health -> benchmark -> delete, teardown after failures, the orphan sensor, token-based
TPOT with many tokens per chunk, and no trace of the API key in anything a run writes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from assets import results
from bench.scripted_server import Scenario, scripted_server
from resources.store import ResultStore
from resources.target_resource import RunPodConfig, TargetsResource
from servecat.deployment import Deployment
from targets.runpod import RunPodClient, RunPodError, RunPodTarget
from targets.target import TargetError
from tests.pipeline.fake_runpod import FakeRunPod
from tests.pipeline.support import Bench, LiveApp, spec_dict


def dep(row: dict) -> Deployment:
    return Deployment.from_row({"engine": "runpod", **row})


KEY = "rpa_SERVECATLEAKCHECK_7f3c9e1d52ab4e08"  # unique: grep for it after a run
GAP_MS, TOKENS_PER_CHUNK, OUTPUT_TOKENS = 24.0, 4, 16


@dataclass
class RunPodBench:
    bench: Bench
    fake: FakeRunPod
    url: str

    def config(self, **kw) -> RunPodConfig:
        values = {"api_key": dg.EnvVar("RUNPOD_API_KEY"), "rest_url": f"{self.url}/v1",
                  "serverless_url": f"{self.url}/v2",
                  "pod_url_template": f"{self.url}/proxy/{{pod_id}}-{{port}}",
                  "health_timeout_s": 10.0, "poll_s": 0.05} | kw
        return RunPodConfig(**values)

    def run(self, key: str, raise_on_error: bool = True, **kw):
        return self.bench.run(key, raise_on_error=raise_on_error,
                              targets=TargetsResource(runpod=self.config(**kw)))

    def client(self) -> RunPodClient:
        return RunPodClient(KEY, f"{self.url}/v1", f"{self.url}/v2", backoff_s=0.01)


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory) -> Path:
    """One MLflow store for the module: creating its tables costs seconds per test."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def runpod_env(tmp_path, tiny_model, mlflow_dir, monkeypatch) -> Iterator[RunPodBench]:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    spec = spec_dict(tiny_model, levels=(1, 4), requests=8, output_tokens=OUTPUT_TOKENS)
    spec |= {"hardware": [{"name": "l4", "counts": [1]}], "engines": [{"name": "runpod"}],
             "quantizations": ["bf16"]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "home").mkdir()
    # The worker packs several tokens into each SSE chunk, at a fixed gap.
    scenario = Scenario(ttft_ms=(5.0, 5.0), gap_ms=(GAP_MS, GAP_MS),
                        tokens_per_chunk=TOKENS_PER_CHUNK)
    with scripted_server(scenario) as backend, \
            dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        fake = FakeRunPod(api_key=KEY, backend=backend, log_path=tmp_path / "fake-runpod.log")
        bench = Bench(tmp_path, instance, tmp_path / "spec.yaml",
                      ResultStore(root=str(tmp_path / "store")), f"sqlite:///{mlflow_dir / 'mlflow.db'}")
        with LiveApp(fake.app()) as live:
            yield RunPodBench(bench, fake, live.url)


def summaries(bench: Bench, key: str) -> list[dict]:
    return [pq.read_table(bench.store.uri(p)).to_pylist()[0]
            for p in bench.store.list(f"runs/summary/deployment={key}/")]


def test_runpod_partition_end_to_end_with_token_based_tpot(runpod_env):
    env, fake = runpod_env, runpod_env.fake
    fake.rest_flaky = 1  # a 503 first: the client retries
    [key] = env.bench.matrix()
    assert env.run(key).success
    # Created from a per-deployment vLLM worker template, named for the deployment, deleted.
    creates = [p for m, p in fake.calls if m == "POST" and p.startswith("/v1/")]
    assert creates == ["/v1/templates"] * 2 + ["/v1/endpoints"]  # after a 503
    assert not fake.endpoints and not fake.templates
    assert sorted(k for k, _ in fake.deleted) == ["endpoints", "templates"]
    assert any(p.endswith("/health") for _, p in fake.calls)
    rows = summaries(env.bench, key)
    assert len(rows) == 2 and all(r["status"] == "ok" and r["num_completed"] == 8 for r in rows)
    for r in rows:
        # 16 tokens in 4 chunks 24 ms apart: ITL is per chunk, TPOT per token = 72 / 15 ms.
        assert r["itl_p50_ms"] == pytest.approx(GAP_MS, abs=8)
        assert r["tpot_p50_ms"] == pytest.approx(3 * GAP_MS / (OUTPUT_TOKENS - 1), abs=2)
        assert r["mean_output_tokens"] == OUTPUT_TOKENS
        assert r["target_cold_start_s"] >= fake.ready_after_s
        assert r["target_cost_usd_per_hour"] is None  # serverless reports no $/hour


def test_created_endpoint_bodies_follow_the_deployment(runpod_env):
    env, fake = runpod_env, runpod_env.fake
    [key] = env.bench.matrix()
    deployment = dep({"deployment": key, "model": "tiny", "model_id": "org/tiny", "hardware": "l4",
                      "gpu_count": 1, "quantization": "bf16", "max_num_seqs": 16.0})
    target = RunPodTarget(env.client(), env.config(api_key=KEY), deployment)
    with target:
        [endpoint] = fake.endpoints.values()
        [template] = fake.templates.values()
        assert endpoint["name"] == f"servecat-{key}" and endpoint["gpuTypeIds"] == ["NVIDIA L4"]
        assert (endpoint["workersMin"], endpoint["gpuCount"]) == (1, 1)
        assert template["isServerless"] and template["env"] == {
            "MODEL_NAME": "org/tiny", "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "tiny",
            "DTYPE": "bfloat16", "TENSOR_PARALLEL_SIZE": "1", "MAX_NUM_SEQS": "16"}
        ep = target.endpoint()
        assert ep.base_url == f"{env.url}/v2/{endpoint['id']}/openai/v1"
        assert KEY not in repr(ep) and KEY not in repr(target.client)
    assert not fake.endpoints and not fake.templates
    target.stop()  # idempotent


def test_health_never_ready_fails_clearly_and_deletes_the_endpoint(runpod_env):
    env, fake = runpod_env, runpod_env.fake
    fake.never_ready = True
    [key] = env.bench.matrix()
    result = env.run(key, raise_on_error=False, health_timeout_s=1.0)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "had no ready worker after 1 s" in str(failure.event_specific_data.error)
    assert ("POST", "/v1/endpoints") in fake.calls
    assert not fake.endpoints and not fake.templates


def test_server_errors_mid_run_still_delete_the_endpoint(runpod_env):
    env, fake = runpod_env, runpod_env.fake
    fake.openai_fail_after = 12  # the probe and the first workload pass, then HTTP 500s
    [key] = env.bench.matrix()
    result = env.run(key, raise_on_error=False)
    assert not result.success
    rows = {r["concurrency"]: r for r in summaries(env.bench, key)}
    assert rows[1]["status"] == "ok" and rows[4]["status"] == "failed"
    assert not fake.endpoints and not fake.templates
    assert sorted(k for k, _ in fake.deleted) == ["endpoints", "templates"]


def test_cancel_deletes_and_a_reused_endpoint_is_never_deleted(runpod_env):
    env, fake = runpod_env, runpod_env.fake
    deployment = dep({"deployment": "d1", "model": "tiny", "model_id": "org/tiny",
                      "hardware": "h100", "gpu_count": 1, "quantization": "bf16"})
    with pytest.raises(KeyboardInterrupt), RunPodTarget(env.client(), env.config(api_key=KEY),
                                                        deployment):
        assert len(fake.endpoints) == 1
        raise KeyboardInterrupt  # what a cancelled run raises in the step
    assert not fake.endpoints
    existing = fake.add_endpoint("someone-elses")
    fake.ready_after_s = 0
    with RunPodTarget(env.client(), env.config(api_key=KEY, endpoint_id=existing), deployment):
        pass
    assert existing in fake.endpoints and not fake.templates


def test_spot_pod_reports_its_cost_and_is_deleted(runpod_env):
    env, fake = runpod_env, runpod_env.fake
    deployment = dep({"deployment": "d2", "model": "tiny", "model_id": "org/tiny",
                      "hardware": "a100-80gb", "gpu_count": 2, "quantization": "fp16"})
    target = RunPodTarget(env.client(), env.config(api_key=KEY, mode="pod", interruptible=True),
                          deployment)
    with target:
        [pod] = fake.pods.values()
        assert pod["interruptible"] and pod["name"] == "servecat-d2" and pod["gpuCount"] == 2
        assert target.endpoint().headers == {}  # the RunPod key never goes to the pod
        info = target.info()
    assert info["cost_usd_per_hour"] == fake.cost_per_hr and info["cold_start_s"] > 0
    assert not fake.pods


def test_errors_are_clear_and_never_carry_the_key(runpod_env):
    env = runpod_env
    bad = RunPodClient("wrong-key", f"{env.url}/v1", f"{env.url}/v2", backoff_s=0.01)
    with pytest.raises(RunPodError, match=r"RunPod GET .*/v1/endpoints: HTTP 401"):
        bad.list_endpoints()
    env.fake.rest_flaky = 10
    with pytest.raises(RunPodError, match="HTTP 503") as err:
        env.client().list_pods()
    assert KEY not in str(err.value)
    with pytest.raises(TargetError, match="no RunPod GPU type"):
        RunPodTarget(env.client(), env.config(api_key=KEY),
                     dep({"deployment": "d", "model": "m", "model_id": "m",
                          "hardware": "a100-40gb", "gpu_count": 1, "quantization": "bf16"})).start()


def test_orphan_sensor_deletes_old_servecat_resources_only(runpod_env):
    from pipeline.runpod_sensors import runpod_orphan_sensor

    env, fake = runpod_env, runpod_env.fake
    old, hour = 5 * 3600.0, 3600.0
    orphan = fake.add_endpoint("servecat-tiny-l4x1-runpod-bf16-aaaa", age_s=old)
    orphan_pod = fake.add_pod("servecat-tiny-h100x1-runpod-bf16-bbbb", age_s=old)
    fake.templates |= {"t1": {"id": "t1", "name": "servecat-gone-deployment-0a1b2c"},
                       "t2": {"id": "t2", "name": "servecat-tiny-l4x1-runpod-bf16-cccc-3d4e5f"},
                       "t3": {"id": "t3", "name": "vllm-worker"}}
    young = fake.add_endpoint("servecat-tiny-l4x1-runpod-bf16-cccc", age_s=60, template_id="t2")
    foreign = fake.add_endpoint("my-production-endpoint", age_s=old)
    busy = fake.add_endpoint("servecat-busy-deployment", age_s=old)
    env.bench.instance.add_run(dg.DagsterRun(job_name="runs_job", run_id="r1",
                                             status=dg.DagsterRunStatus.STARTED,
                                             tags={"dagster/partition": "busy-deployment"}))
    context = dg.build_sensor_context(instance=env.bench.instance, resources={
        "targets": TargetsResource(runpod=env.config(orphan_age_s=hour))})
    result = runpod_orphan_sensor(context)
    assert "deleted 3" in str(result.skip_message)
    assert set(fake.endpoints) == {young, foreign, busy} and set(fake.templates) == {"t2", "t3"}
    assert orphan not in fake.endpoints and orphan_pod not in fake.pods
    # Not configured: no call at all.
    calls = len(fake.calls)
    bare = dg.build_sensor_context(instance=env.bench.instance,
                                   resources={"targets": TargetsResource()})
    assert "not configured" in str(runpod_orphan_sensor(bare).skip_message)
    assert len(fake.calls) == calls


def test_api_key_appears_in_nothing_a_run_writes(runpod_env, mlflow_dir, caplog, capfd):
    env = runpod_env
    caplog.set_level(logging.DEBUG)
    [key] = env.bench.matrix()
    # Success means the key was resolved from dg.EnvVar and sent: the fake answers 401 otherwise.
    assert env.run(key).success
    dg.materialize([results.benchmark_results], instance=env.bench.instance,
                   resources=env.bench.resources())
    assert (env.bench.root / "results.duckdb").exists()
    # Every file under the test's root: store Parquet, DuckDB, MLflow db and artifacts, the
    # Dagster instance (run/event storage, compute logs), the fake's and the target's logs.
    needle = KEY.encode()
    files = [p for root in (env.bench.root, mlflow_dir) for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.suffix == ".parquet" for p in files)
    leaks = [str(p) for p in files if needle in p.read_bytes()]
    assert not leaks, leaks
    # Events and metadata as Dagster stores them, and everything logged or printed.
    for run in env.bench.instance.get_runs():
        assert not [e for e in env.bench.instance.all_logs(run.run_id) if KEY in str(e)]
    assert KEY not in caplog.text
    out, err = capfd.readouterr()
    assert KEY not in out and KEY not in err
    assert os.environ["RUNPOD_API_KEY"] == KEY  # the key was there all along


def test_started_at_is_recent_for_created_endpoints(runpod_env):
    # The orphan sensor's clock: createdAt parses to an aware UTC time.
    from targets.runpod import created_at

    eid = runpod_env.fake.add_endpoint("servecat-x", age_s=120)
    born = created_at(runpod_env.fake.endpoints[eid])
    assert born is not None and datetime.now(UTC) - born > timedelta(seconds=100)
