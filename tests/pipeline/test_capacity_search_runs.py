"""A capacity search through the whole pipeline: matrix -> runs -> catalog, against queueing
scripted servers whose capacity is their slot count (max_num_seqs)."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from assets.catalog import model_catalog
from assets.results import benchmark_results, results_complete
from catalog.snapshots import load_latest
from tests.pipeline.support import scripted_command, spec_dict

# 375 ms of service (TTFT 200 ms + 7 gaps of 25 ms): at concurrency C nobody waits (p99 TTFT
# ~200 ms), at C + 1 some wait a service time (~575 ms): over interactive's 450 ms limit.
SCENARIO = {"ttft_ms": [200, 200], "gap_ms": [25, 25]}


def test_search_through_the_pipeline_finds_each_deployments_slots(bench_env, tiny_model):
    spec = spec_dict(tiny_model, requests=8)
    spec["engines"] = [{"name": "openai", "args": {"max_num_seqs": [2, 4]}}]
    spec["workloads"]["loads"] = [{"search": "concurrency", "min": 1, "max": 8,
                                   "slo": ["interactive"]}]
    bench_env.spec.write_text(yaml.safe_dump(spec))
    bench_env.commands = {"openai": scripted_command(SCENARIO, extra="--slots {max_num_seqs}")}
    keys = bench_env.matrix()
    assert len(keys) == 2  # one search row each: `matrix expand` counts it as one config
    for key in keys:
        measured = bench_env.run(key).asset_materializations_for_node("benchmark_runs")[0]
        assert measured.metadata["measured_now"].value >= 4
        # The time the sweep spent counts each probe once (the search's row sums them again).
        probes = [pq.read_table(bench_env.store.uri(p)).to_pylist()[0]
                  for p in bench_env.store.list(f"runs/summary/deployment={key}/")]
        assert measured.metadata["sweep_s"].value == pytest.approx(
            sum(r["wall_s"] for r in probes if not r["search"]), abs=0.06)
        # Again: the finished search is not run again.
        again = bench_env.run(key).asset_materializations_for_node("benchmark_runs")[0]
        assert again.metadata["measured_now"].value == 0
    result = dg.materialize([benchmark_results, results_complete, model_catalog],
                            instance=bench_env.instance, resources=bench_env.resources())
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    table = load_latest(bench_env.store.root).tables["deployments"]
    interactive = table[table["profile"] == "interactive"].set_index("deployment")
    for key in keys:
        rows = [pq.read_table(bench_env.store.uri(p)).to_pylist()[0]
                for p in bench_env.store.list(f"runs/summary/deployment={key}/")]
        slots = int(rows[0]["max_num_seqs"])
        [search] = [r for r in rows if r["search"]]
        assert search["status"] == "skipped"
        assert f"interactive: holds at {slots}, misses at {slots + 1}" in search["status_reason"]
        assert {r["probe_of"] for r in rows if not r["search"]} == {search["config_id"]}
        cap = interactive.loc[key]
        assert (cap["pass_level"], cap["fail_level"]) == (slots, slots + 1)
        assert cap["capacity_status"] == "bracketed"
