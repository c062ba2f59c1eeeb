"""DAEMON TEST (slow, ~1-3 min): the real `dagster-daemon` in a temp DAGSTER_HOME, sensors
ticking every 2 s. A deployment whose run failed and one never run are registered; a benchmark
request POSTed over HTTP is picked up, its run finishes, the request says `done`, and the
catalog refreshes anyway: the catalog API serves the request's deployment. Skip it with
`-m "not daemon"`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml

from catalog.api import create_app
from resources.target_resource import TargetsResource
from tests.pipeline.support import REPO, LiveApp, spec_dict
from tests.pipeline.test_catalog_refresh import FAILING

pytestmark = pytest.mark.daemon

DEADLINE_S = 170  # from the POST to the catalog serving it; ~60-100 s on a loaded 2-core box
REQUEST = {"engines": [{"name": "openai"}], "quantizations": ["fp32"],
           "workloads": {"lengths": [{"name": "chat", "input_tokens": 16, "output_tokens": 4}],
                         "loads": [{"concurrency": [1, 2]}], "requests": 4}}
# Runs launch as soon as a sensor asks (no queue to wait on); telemetry off (no network).
INSTANCE = ("telemetry:\n  enabled: false\nrun_coordinator:\n"
            "  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")


def start_daemon(env: dict, log: Path) -> subprocess.Popen:
    """`dagster-daemon run` on the code location, in its own process group (its code server and
    run workers join it), so the test can stop all of them."""
    exe = str(Path(sys.executable).parent / "dagster-daemon")
    with log.open("w") as out:
        return subprocess.Popen([exe, "run", "-m", "pipeline.definitions"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def test_daemon_refreshes_the_catalog_after_a_request(bench_env, tiny_model, monkeypatch):
    spec = spec_dict(tiny_model, levels=(1,), requests=4)
    spec["engines"] = [{"name": "openai", "args": {"max_num_seqs": [4, 8]}}]
    bench_env.spec.write_text(yaml.safe_dump(spec))
    failed, never_run = sorted(bench_env.matrix())
    assert not bench_env.run(failed, raise_on_error=False,
                             targets=TargetsResource(commands={"openai": FAILING})).success
    (bench_env.root / "home" / "dagster.yaml").write_text(INSTANCE)
    env = bench_env.env() | {"SERVECAT_SENSOR_INTERVAL_S": "2", "PYTHONUNBUFFERED": "1"}
    monkeypatch.setenv("SERVECAT_API_KEYS", "k-123")
    headers = {"Authorization": "Bearer k-123"}
    log = bench_env.root / "daemon.log"
    daemon = start_daemon(env, log)
    try:
        with LiveApp(create_app(bench_env.store.root, configs_dir=REPO / "configs",
                                poll_s=0.5)) as api:
            posted = httpx.post(f"{api.url}/v1/benchmark-requests", headers=headers,
                                json={"model": str(tiny_model), "matrix_overrides": REQUEST})
            assert posted.status_code == 201, posted.text
            request_id = posted.json()["id"]
            status, served = _wait_for_catalog(api.url, headers, request_id, daemon, log)
        # The snapshot is written inside the catalog's step: let its run record the rest.
        _wait_for_runs(bench_env.instance)
    finally:
        stop(daemon)
    assert status["status"] == "done", status
    [key] = status["details"]["deployments"]
    assert key in served, served

    instance = bench_env.instance
    # The catalog says which deployments it lacks, and why.
    [record] = instance.fetch_materializations(dg.AssetKey("model_catalog"), limit=1).records
    lacking = record.asset_materialization.metadata["lacking"].value
    assert f"| {failed} | last run failed |" in lacking and f"| {never_run} | never run |" in lacking
    # Its checks ran in the same run as the refresh.
    checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("model_catalog"), "catalog_has_every_config")])
    assert [c.run_id for c in checks.values()] == [record.run_id]
    # The spec sensor started from the matrix this test built: it launched no rebuild.
    assert not instance.get_runs(dg.RunsFilter(job_name="benchmark_matrix_job"))
    assert never_run not in {r.tags.get("dagster/partition") for r in instance.get_runs()}


def _wait_for_runs(instance: dg.DagsterInstance, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = instance.get_runs()
        if (all(r.is_finished for r in runs)
                and instance.fetch_materializations(dg.AssetKey("model_catalog"), limit=1).records):
            return
        time.sleep(0.5)


def _wait_for_catalog(url: str, headers: dict, request_id: str, daemon: subprocess.Popen,
                      log: Path) -> tuple[dict, set[str]]:
    """Poll until the request is done and /v1/recommend answers with its deployment (ranked, or
    unranked with the reason); the request's status and the deployments served."""
    deadline = time.monotonic() + DEADLINE_S
    status: dict = {}
    served: set[str] = set()
    answer = None
    while time.monotonic() < deadline and daemon.poll() is None:
        status = httpx.get(f"{url}/v1/benchmark-requests/{request_id}", headers=headers).json()
        if status["status"] in ("rejected", "failed"):
            break
        answer = httpx.get(f"{url}/v1/recommend", params={"model": "tiny", "profile": "server",
                                                          "lengths": "chat"})
        if answer.status_code == 200:  # ranked, or listed unranked with its capacity status
            served = {i["deployment"] for i in answer.json()["items"] + answer.json()["unranked"]}
            if status["status"] == "done" and set(status["details"]["deployments"]) <= served:
                return status, served
        time.sleep(1.0)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    last = "none" if answer is None else f"{answer.status_code} {answer.text[:400]}"
    pytest.fail(f"no refreshed catalog within {DEADLINE_S} s (daemon exit code "
                f"{daemon.poll()}); request: {status}; /v1/recommend: {last}; /healthz: "
                f"{httpx.get(f'{url}/healthz').text[:400]}\ndaemon log:\n{tail}")
