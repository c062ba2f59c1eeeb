"""`make demo` (pipeline.demo.run_demo) on scripted servers: its own progress, Dagster's logs off
the screen, the recommendation per profile; a re-run measures nothing yet every materialization
still shows the deployment's results and the checks are evaluated. Also the spec sensor's first
tick, which starts from the matrix already built."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest
import yaml

import pipeline.demo as demo
import pipeline.schedules as schedules
from assets.matrix import spec_digest
from tests.pipeline.support import scripted_command, spec_dict

# 375 ms of service per request and MAX_NUM_SEQS slots: a deployment holds the interactive
# profile's 450 ms p99 TTFT up to its slot count, so its capacity there is bracketed, while
# the looser profiles hold at every level measured (a lower bound).
SCENARIO = {"ttft_ms": [200, 200], "gap_ms": [25, 25]}


@pytest.fixture
def demo_env(tmp_path, tiny_model, monkeypatch):
    spec = spec_dict(tiny_model, levels=(1, 2, 4), requests=8)
    spec["name"] = "demo-test"
    spec["engines"] = [{"name": "openai", "args": {"max_num_seqs": [2, 4]}}]
    path = tmp_path / "demo-test.yaml"
    path.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name, value in {
        "DAGSTER_HOME": str(home), "SERVECAT_STORE": str(tmp_path / "store"),
        "SERVECAT_RESULTS_DB": str(tmp_path / "results.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SERVECAT_TARGET_COMMANDS": json.dumps(
            {"openai": scripted_command(SCENARIO, extra="--slots {max_num_seqs}")}),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(demo, "ensure_model", lambda name: tiny_model)
    return path


def run_demo(spec) -> list[str]:
    lines: list[str] = []
    demo.run_demo(spec, echo=lines.append)
    return "\n".join(lines).splitlines()


def latest_runs_materializations(instance: dg.DagsterInstance) -> dict[str, dict]:
    records = instance.fetch_materializations(dg.AssetKey("benchmark_runs"), limit=10).records
    out: dict[str, dict] = {}
    for r in records:  # newest first
        out.setdefault(r.partition_key, r.asset_materialization.metadata)
    return out


def test_demo_progress_recommendations_and_a_rerun_that_keeps_its_results(demo_env, capfd):
    first = run_demo(demo_env)
    text = "\n".join(first)
    # Progress of its own: totals first, a line per finished workload and per deployment.
    assert "benchmark_runs: 0/2 deployments, 0/6 workloads, ETA unknown" in text
    assert sum(bool(re.match(r"  \S+: chat-c\d+-\w+ done \| \d/2 deployments", line))
               for line in first) == 6, text
    done = [line for line in first if re.match(r"\[\d/2\] \S+: ok, 3/3 workloads done", line)]
    assert len(done) == 2 and done[-1].endswith("2/2 deployments, 6/6 workloads, ETA 0 s"), text
    assert "benchmark_results + model_catalog: ok, 7/7 checks passed" in text
    # Dagster's own logs stayed off the screen.
    out, err = capfd.readouterr()
    assert " - dagster - " not in out + err
    # The recommendation per model × length profile × profile; load levels are never ranked.
    assert "top configs" not in text and "recommendations (deployments ranked" in text
    interactive = _group(first, "tiny · chat · interactive")
    assert re.search(r"demand [\d.]+ req/s \(2 x the highest capacity\)", interactive[0])
    assert "capacity req/s" in interactive[1] and "P(#1)" in interactive[1]
    assert len(interactive) == 4  # head, header, the two deployments
    # Two slots: bracketed between concurrency 2 and 4; four slots: held at every level (>=).
    slots2, slots4 = sorted(interactive[2:], key=lambda row: ">= " in row)
    assert re.search(r"  [\d.]+ \[[\d.]+, [\d.]+\] +\d+ ", slots2), text
    assert re.search(r"  >= [\d.]+ +<= \d+ ", slots4), text
    offline = _group(first, "tiny · chat · offline")
    assert all(">= " in row and "<= " in row for row in offline[2:4]), offline

    instance = dg.DagsterInstance.get()
    runs = latest_runs_materializations(instance)
    assert len(runs) == 2
    for key, meta in runs.items():
        [run] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": key}))
        args = json.loads(run.tags["servecat/engine_args"])
        assert args["max_num_seqs"] in (2, 4) and run.tags["servecat/engine"] == "openai"
        assert meta["engine_args"].value == args and meta["quantization"].value == "fp32"
        assert meta["sweep_s"].value == round(meta["sweep_s"].value, 1)

    second = run_demo(demo_env)
    text = "\n".join(second)
    assert "benchmark_runs: 0/2 deployments, 6/6 workloads, ETA 0 s" in text
    assert sum("0 load levels measured now" in line for line in second) == 2, text
    assert "benchmark_results + model_catalog: ok, 7/7 checks passed" in text
    for meta in latest_runs_materializations(instance).values():
        # Nothing measured, and still the deployment's results, not a bare `measured_now 0`.
        assert meta["measured_now"].value == 0 and meta["workloads_done"].value == 3
        table = meta["results"].value
        assert sum(line.startswith("| chat-c") and "| ok |" in line
                   for line in table.splitlines()) == 3, table
        assert meta["summary_rows"].value == 3 and meta["request_rows"].value == 24


def _group(lines: list[str], head: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")),
               len(lines))
    return lines[start:end]


def test_spec_sensor_starts_from_the_built_matrix(bench_env, monkeypatch):
    monkeypatch.setattr(schedules, "DEFAULT_SPEC", str(bench_env.spec))

    def tick(cursor=None):
        context = dg.build_sensor_context(instance=bench_env.instance, cursor=cursor)
        return schedules.matrix_spec_sensor(context), context.cursor

    result, cursor = tick()  # no matrix yet: build it
    assert isinstance(result, dg.RunRequest)
    bench_env.matrix()  # what `make demo` does before `make dev`
    result, cursor = tick()  # no cursor, but the matrix was built from these bytes
    assert isinstance(result, dg.SkipReason) and cursor == spec_digest(bench_env.spec)
    bench_env.spec.write_text(bench_env.spec.read_text().replace("requests: 8", "requests: 6"))
    result, cursor = tick(cursor)
    assert isinstance(result, dg.RunRequest) and cursor == spec_digest(bench_env.spec)
