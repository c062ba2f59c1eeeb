"""`servecat matrix plan`: GPU-hours, dollars and wall time of a matrix on a fleet."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from bench.matrix import expand_file
from bench.plan import Assumptions, estimate_workload_s, makespan_h, plan
from cli.main import main
from servecat.atomic import write_parquet_atomic
from servecat.fleet import load_fleet
from servecat.hardware import load_hardware

TABLE = load_hardware()
SPEC = {
    "name": "plan-test",
    "models": [{"id": "org/m-1b", "name": "m1b", "parameters": 1.0e9, "layers": 16,
                "kv_heads": 8, "head_dim": 64, "max_context": 4096}],
    "hardware": [{"name": "l4", "counts": [1, 2]}, "cpu"],
    "engines": [{"name": "vllm"}, {"name": "runpod"}],
    "quantizations": ["bf16"],
    "workloads": {"lengths": [{"name": "chat", "input_tokens": 128, "output_tokens": 64}],
                  "loads": [{"concurrency": [1, 8]}, {"rate": [2.0]}], "requests": 20},
}
NO_MEASUREMENTS = pd.DataFrame({"config_id": [], "deployment": [], "wall_s": []})


@pytest.fixture
def matrix(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path, expand_file(path)


def fleet_file(tmp_path, hardware: dict, quotas: dict) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "hardware": hardware, "quotas": quotas}))
    return str(path)


def test_roofline_estimate_follows_the_stated_model(matrix):
    _, exp = matrix
    a = Assumptions()
    df = exp.configs
    seconds = pd.Series(estimate_workload_s(df, TABLE, a), index=df.index)
    row = df[(df["hardware_key"] == "l4x1") & (df["engine"] == "vllm")
             & (df["concurrency"] == 1)].iloc[0]
    weights, kv_token = 1e9 * 2, 2 * 16 * 8 * 64 * 2
    step = max((weights + (128 + 32) * kv_token) / (300e9 * 0.6), 2e9 / (121e12 * 0.4))
    expected = 20 * 2e9 * 128 / (121e12 * 0.4) + 20 * 64 * step
    assert seconds[row.name] == pytest.approx(expected)
    l4 = df[(df["hardware_key"] == "l4x1") & (df["engine"] == "vllm")]
    by_level = dict(zip(l4["workload_id"], seconds[l4.index], strict=True))
    c1, c8, r2 = (next(v for k, v in by_level.items() if tag in k) for tag in ("-c1-", "-c8-", "-r2-"))
    assert c8 < c1  # a batch of 8 shares each weight read
    assert r2 >= 20 / 2.0  # an open-loop workload lasts at least requests / rate


def test_measured_durations_replace_estimates(matrix, tmp_path):
    _, exp = matrix
    fleet = load_fleet(fleet_file(tmp_path, {"l4": {"gpus": 2}, "cpu": {"gpus": 1}},
                                  {"runpod": 1}), TABLE)
    before = plan("t", exp.configs, NO_MEASUREMENTS, TABLE, fleet)
    row = exp.configs[exp.configs["hardware"] == "cpu"].iloc[0]
    est = estimate_workload_s(exp.configs.loc[[row.name]], TABLE, Assumptions())[0]
    measured = pd.DataFrame({"config_id": [row["config_id"]], "deployment": [row["deployment"]],
                             "wall_s": [est + 3600.0]})
    after = plan("t", exp.configs, measured, TABLE, fleet)
    cpu_before, cpu_after = (next(p for p in x.pools if p.pool == "cpu") for x in (before, after))
    assert (cpu_before.measured, cpu_after.measured) == (0, 1)
    assert cpu_after.gpu_hours - cpu_before.gpu_hours == pytest.approx(1.0)
    assert cpu_after.usd_on_demand - cpu_before.usd_on_demand == pytest.approx(
        TABLE["cpu"].on_demand_usd_per_hour)


def test_pools_fleet_gpus_and_quotas(matrix, tmp_path):
    _, exp = matrix
    fleet = load_fleet(fleet_file(tmp_path, {"l4": {"gpus": 1, "capacity": "spot"}},
                                  {"runpod": 2}), TABLE)
    result = plan("t", exp.configs, NO_MEASUREMENTS, TABLE, fleet)
    pools = {p.pool: p for p in result.pools}
    assert set(pools) == {"l4", "cpu", "runpod"}
    assert pools["l4"].wall_h is None and "needs 2 GPUs, the fleet has 1" in pools["l4"].why
    assert pools["cpu"].wall_h is None and "no GPUs for cpu" in pools["cpu"].why
    assert pools["l4"].usd_fleet == pytest.approx(pools["l4"].usd_spot)  # the fleet buys spot
    assert pools["runpod"].slots == 2 and pools["runpod"].wall_h > 0
    assert result.total.configs == len(exp.configs)
    assert "l4, cpu" in result.total.why or "cpu, l4" in result.total.why


def test_makespan_list_schedules_longest_first():
    assert makespan_h(np.array([3.0, 2.0, 2.0, 1.0]), np.ones(4), 2) == 4.0
    # the 2-GPU run holds both GPUs for 2 h, then the 1-GPU runs go side by side
    assert makespan_h(np.array([2.0, 1.0, 1.0]), np.array([2, 1, 1]), 2) == 3.0
    assert makespan_h(np.array([1.0]), np.array([4]), 2) is None
    assert makespan_h(np.array([]), np.array([]), 0) == 0.0


def test_cli_reads_measured_durations_from_the_store(matrix, tmp_path):
    spec, exp = matrix
    row = exp.configs.iloc[0]
    store = tmp_path / "store"
    write_parquet_atomic(pd.DataFrame({
        "config_id": [row["config_id"]], "deployment": [row["deployment"]],
        "workload_id": [row["workload_id"]], "status": ["ok"], "wall_s": [42.0]}),
        store / "runs" / "summary" / f"deployment={row['deployment']}"
        / f"workload={row['workload_id']}.parquet")
    fleet = fleet_file(tmp_path, {"l4": {"gpus": 4}, "cpu": {"gpus": 1}}, {"runpod": 2})
    runner = CliRunner()
    out = runner.invoke(main, ["matrix", "plan", str(spec), "--fleet", fleet, "--store",
                               str(store), "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["total"]["measured"] == 1 and data["total"]["configs"] == len(exp.configs)
    assert data["total"]["wall_h"] > 0 and "roofline" in data["assumptions"]["text"]
    text = runner.invoke(main, ["matrix", "plan", str(spec), "--fleet", fleet, "--store",
                                str(store)]).output
    assert "GPU-hours" in text and "$ spot" in text and "total" in text
    bad = runner.invoke(main, ["matrix", "plan", str(spec), "--fleet", str(tmp_path / "no.yaml")])
    assert bad.exit_code == 1 and "fleet file not found" in bad.output


def test_a_capacity_search_counts_as_measured_by_its_own_row(tmp_path):
    # A search's probes carry config ids of their own; the plan's config is the search, whose
    # summary row has status `skipped` (no load level) and the wall time of all its probes.
    store = tmp_path / "store"
    part = store / "runs" / "summary" / "deployment=d"
    write_parquet_atomic(pd.DataFrame({
        "config_id": ["search-1", "search-1-probe-c4", "other"], "deployment": ["d"] * 3,
        "status": ["skipped", "ok", "skipped"], "search": [True, False, None],
        "wall_s": [42.0, 5.0, 7.0]}), part / "workload=w.parquet")
    from cli.commands.matrix_plan import measured_durations

    got = measured_durations(str(store)).set_index("config_id")["wall_s"].to_dict()
    # The search and its probe; a config skipped without a search (saturation) is not measured.
    assert got == {"search-1": 42.0, "search-1-probe-c4": 5.0}
