"""`benchmark_runs`: measure, resume, fail clearly, survive SIGKILL; results in DuckDB; MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import mlflow
import pyarrow.parquet as pq
import yaml

from resources.target_resource import TargetsResource
from resources.warehouse import refresh_views
from tests.pipeline.support import REPO, dagster_cli, scripted_command, spec_dict


def summaries(bench, key):
    return [pq.read_table(bench.store.uri(p)).to_pylist()[0]
            for p in bench.store.list(f"runs/summary/deployment={key}/")]


def measured_now(result) -> int:
    return result.asset_materializations_for_node("benchmark_runs")[0].metadata[
        "measured_now"].value


def test_partition_measures_every_workload_and_resumes(bench_env):
    [key] = bench_env.matrix()
    assert measured_now(bench_env.run(key)) == 3
    rows = summaries(bench_env, key)
    assert sorted(r["concurrency"] for r in rows) == [1, 2, 4]
    assert all(r["status"] == "ok" and r["num_completed"] == 8 for r in rows)
    for path in bench_env.store.list(f"runs/requests/deployment={key}/"):
        table = pq.read_table(bench_env.store.uri(path))
        assert table.num_rows == 8 and set(table["deployment"].to_pylist()) == {key}
    # MLflow: one run for the deployment, one step per workload, params from the matrix.
    client = mlflow.MlflowClient(bench_env.tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("servecat").experiment_id])
    assert run.data.params["deployment"] == key and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "output_tokens_per_s")]
    assert sorted(steps) == [0, 1, 2]
    # Again: nothing to do. Forced: measured again, still one file per workload.
    assert measured_now(bench_env.run(key)) == 0
    assert measured_now(bench_env.run(key, force=True)) == 3
    assert len(summaries(bench_env, key)) == 3


def _processes(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


def test_server_death_fails_clearly_cleans_up_and_rerun_resumes(bench_env, tiny_model):
    # Each workload takes ~1 s; the server dies 2.5 s after it starts: mid-sweep.
    bench_env.spec.write_text(yaml.safe_dump(spec_dict(tiny_model, output_tokens=16)))
    [key] = bench_env.matrix()
    slow = {"ttft_ms": [20, 30], "gap_ms": [15, 20]}
    dying = scripted_command(slow, script=str(REPO / "tests/pipeline/dying_server.py"),
                             extra="--die-after 2.5")
    result = bench_env.run(key, raise_on_error=False,
                           targets=TargetsResource(commands={"openai": dying}))
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = str(failure.event_specific_data.error)
    assert f"{key}: workload" in message and "exited with code 3" in message, message
    rows = summaries(bench_env, key)
    [failed] = [r for r in rows if r["status"] == "failed"]
    assert "exited with code 3" in failed["status_reason"]
    assert not _processes("dying_server.py")
    done = sum(r["status"] == "ok" for r in rows)
    assert measured_now(bench_env.run(key)) == 3 - done
    assert sorted(r["status"] for r in summaries(bench_env, key)) == ["ok"] * 3


def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(bench_env, tiny_model):
    bench_env.spec.write_text(yaml.safe_dump(spec_dict(tiny_model, levels=(1, 2, 4, 8),
                                                       output_tokens=16)))
    bench_env.commands = {"openai": scripted_command(
        {"ttft_ms": [10, 20], "gap_ms": [10, 15], "seed": 777})}
    env = bench_env.env()
    (bench_env.root / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert dagster_cli(["asset", "materialize", "-m", "pipeline.definitions",
                        "--select", "benchmark_matrix"], env).returncode == 0
    [key] = bench_env.instance.get_dynamic_partitions("deployments")
    args = ["asset", "materialize", "-m", "pipeline.definitions", "--select", "benchmark_runs",
            "--partition", key]
    proc = subprocess.Popen([str(REPO / ".venv/bin/dagster"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not summaries(bench_env, key) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(summaries(bench_env, key))
    assert 1 <= before < 4
    time.sleep(1.0)  # the server gets SIGTERM when its parent dies
    assert not _processes('"seed": 777')
    done = dagster_cli(args, env)
    assert done.returncode == 0, done.stderr[-2000:]
    with bench_env.resources()["warehouse"].connect(bench_env.store) as con:
        refresh_views(con, bench_env.store)
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT config_id) FROM summary").fetchone()
        per_config = con.execute("SELECT config_id, count(*) FROM requests GROUP BY 1").fetchall()
    assert n == distinct == 4
    assert sorted(c for _, c in per_config) == [8] * 4


def test_backfill_of_several_partitions(bench_env, tiny_model):
    spec = spec_dict(tiny_model, levels=(1,), requests=4)
    spec["engines"] = [{"name": "openai", "args": {"max_num_seqs": [4, 8, 16]}}]
    bench_env.spec.write_text(yaml.safe_dump(spec))
    env = bench_env.env()
    # Runs launch at once (no daemon in this test); `make dev` queues them for the daemon.
    (bench_env.root / "home" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n"
        "  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n")
    assert dagster_cli(["asset", "materialize", "-m", "pipeline.definitions",
                        "--select", "benchmark_matrix"], env).returncode == 0
    keys = bench_env.instance.get_dynamic_partitions("deployments")
    assert len(keys) == 3
    out = dagster_cli(["job", "backfill", "-m", "pipeline.definitions", "-j",
                       "benchmark_runs_job", "--partitions", ",".join(keys[:2]), "--noprompt"],
                      env)
    assert out.returncode == 0, out.stderr[-2000:]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = bench_env.instance.get_runs()
        if len(runs) >= 3 and all(r.is_finished for r in runs):
            break
        time.sleep(0.5)
    backfilled = [r for r in bench_env.instance.get_runs() if r.tags.get("dagster/backfill")]
    assert sorted(r.tags["dagster/partition"] for r in backfilled) == sorted(keys[:2])
    assert all(r.is_success for r in backfilled)
    assert [len(summaries(bench_env, k)) for k in keys] == [1, 1, 0]
