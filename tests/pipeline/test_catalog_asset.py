"""`model_catalog` from real results, and the benchmark-request sensor from a POST to runs."""

from __future__ import annotations

import dagster as dg
import httpx

from assets.catalog import (
    catalog_has_every_config,
    catalog_ranks_are_permutations,
    catalog_scores_in_unit_interval,
    model_catalog,
)
from assets.results import benchmark_results
from assets.runs import benchmark_runs
from catalog.api import create_app
from catalog.benchmark_requests import BenchmarkRequests
from catalog.snapshots import load_latest
from pipeline.requests_sensor import REQUEST_TAG, benchmark_request_sensor
from tests.pipeline.support import REPO, LiveApp, scripted_command


def test_catalog_from_measured_results(bench_env):
    [key] = bench_env.matrix()
    bench_env.run(key)
    result = dg.materialize(
        [benchmark_results, model_catalog, catalog_scores_in_unit_interval,
         catalog_ranks_are_permutations, catalog_has_every_config],
        instance=bench_env.instance, resources=bench_env.resources())
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)
    md = result.asset_materializations_for_node("model_catalog")[0].metadata
    assert "| model | profile | rank |" in md["top_5"].value
    assert "data:image/png;base64," in md["pareto_chart"].value
    snapshot = load_latest(bench_env.store.root)
    snap = snapshot.frame
    assert len(snap) == 3 * 4  # 3 configs x 4 profiles
    ranks = snap.groupby("profile")["rank"].apply(sorted).tolist()
    assert all(r == [1, 2, 3] for r in ranks)
    # Beside the configs: each deployment once per length profile x profile, and its levels.
    deployments = snapshot.tables["deployments"]
    assert not deployments[["deployment", "lengths", "profile"]].duplicated().any()
    assert set(deployments["profile"]) == set(snap["profile"])
    assert sorted(snapshot.tables["levels"]["config_id"]) == sorted(snap["config_id"].unique())
    assert "| rank | deployment |" in md["top_deployments"].value or \
        "no deployment has capacity" in md["top_deployments"].value


def test_post_to_partitions_and_runs(bench_env, tiny_model, monkeypatch):
    monkeypatch.setenv("SERVECAT_API_KEYS", "k-123")
    root = bench_env.store.root
    overrides = {"engines": [{"name": "openai"}], "quantizations": ["fp32"],
                 "workloads": {"lengths": [{"name": "chat", "input_tokens": 16,
                                            "output_tokens": 4}],
                               "loads": [{"concurrency": [1, 2]}], "requests": 4}}
    with LiveApp(create_app(root, configs_dir=REPO / "configs")) as api:
        headers = {"Authorization": "Bearer k-123"}
        good = httpx.post(f"{api.url}/v1/benchmark-requests", headers=headers,
                          json={"model": str(tiny_model), "matrix_overrides": overrides})
        bad = httpx.post(f"{api.url}/v1/benchmark-requests", headers=headers,
                         json={"model": str(bench_env.root / "no-such-model")})
        assert good.status_code == bad.status_code == 201, good.text
        good_id, bad_id = good.json()["id"], bad.json()["id"]

        context = dg.build_sensor_context(instance=bench_env.instance,
                                          resources={"store": bench_env.store})
        result = benchmark_request_sensor(context)
        # Apply what the sensor asked for, as the daemon does: add partitions, launch runs.
        for req in result.dynamic_partitions_requests:
            bench_env.instance.add_dynamic_partitions(req.partitions_def_name, req.partition_keys)
        keys = bench_env.instance.get_dynamic_partitions("deployments")
        assert len(keys) == 1 and [r.partition_key for r in result.run_requests] == keys
        assert result.run_requests[0].tags[REQUEST_TAG] == good_id
        status = httpx.get(f"{api.url}/v1/benchmark-requests/{good_id}", headers=headers).json()
        assert status["status"] == "accepted"
        rejected = httpx.get(f"{api.url}/v1/benchmark-requests/{bad_id}", headers=headers).json()
        assert rejected["status"] == "rejected" and "is neither" in rejected["reason"]

        bench_env.commands = {"openai": scripted_command({"ttft_ms": [1, 2]})}
        run = result.run_requests[0]
        done = dg.materialize([benchmark_runs],
                              instance=bench_env.instance, partition_key=run.partition_key,
                              tags=run.tags, resources=bench_env.resources())
        assert done.success
        benchmark_request_sensor(dg.build_sensor_context(
            instance=bench_env.instance, resources={"store": bench_env.store}))
        final = httpx.get(f"{api.url}/v1/benchmark-requests/{good_id}", headers=headers).json()
        assert final["status"] == "done", final
    assert BenchmarkRequests(root).get(good_id).details["deployments"] == keys
