"""The fleet without a person, with the real daemon and the queued run coordinator over a temp
DAGSTER_HOME holding the shipped local instance config (configs/deploy/local/dagster.yaml;
only its intervals shortened, and its limits where a test says so):

- a run whose worker is SIGKILLed mid-sweep fails, its `benchmark` pool slot is freed, the
  daemon retries it and the retry finishes the sweep with every workload exactly once;
- a run that loses its worker max_retries + 1 times is not retried again and says so;
- four partitions under a limit of 2 runs per hardware type run two at a time, and finish;
- the nightly backfill sensor's request becomes a backfill whose run carries its hardware tags.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from pipeline.backfills import BACKFILL_TAG, REMEASURE_TAG
from pipeline.interruptions import GAVE_UP_TAG, INTERRUPTIONS_TAG
from pipeline.run_history import BENCHMARK_ASSET
from resources.store import ResultStore
from resources.warehouse import refresh_views
from servecat import __version__
from servecat.store import summary_path
from tests.pipeline.daemon_support import (
    code_location,
    daemon,
    instance_config,
    quiet,
    submit,
    wait_for,
    worker_pid,
)
from tests.pipeline.support import Bench, scripted_command, spec_dict

SEED = 4242  # names this module's scripted servers in the process list
WORKLOADS = 3  # concurrency 1, 2, 4; ~5, ~2.5 and ~1.2 s against the scripted server
REQUESTS = 16
# Test 2's limit: at most 2 runs at once of each `servecat/hardware` value (the local fleet
# allows one run on its CPU); the `benchmark` pool (1 locally) must then allow 2 steps too.
PER_HARDWARE = [{"key": "servecat/hardware", "value": {"applyLimitPerUniqueValue": True},
                 "limit": 2}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_model):
    """The daemon, its instance, the code location, and seven `openai` deployments on `cpu`."""
    root = tmp_path_factory.mktemp("fleet")
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(pool=2,
                                                                      tags=PER_HARDWARE)))
    spec = spec_dict(tiny_model, levels=(1, 2, 4), requests=REQUESTS, output_tokens=16)
    spec["engines"] = [{"name": "openai", "args": {"max_num_seqs": [1, 2, 3, 4, 5, 6, 7]}}]
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        bench = Bench(root, instance, root / "spec.yaml", ResultStore(root=str(root / "store")),
                      f"sqlite:///{root / 'mlflow.db'}", {"openai": scripted_command(
                          {"ttft_ms": [10, 20], "gap_ms": [15, 20], "seed": SEED})})
        keys = sorted(bench.matrix())
        assert len(keys) == 7
        env = bench.env()
        log = root / "daemon.log"
        with code_location(instance) as (workspace, repo):
            quiet(instance, repo)
            with daemon(home, env, log):
                yield bench, keys, workspace, repo, log


def _run(instance, run_id) -> dg.DagsterRun:
    return instance.get_run_by_id(run_id)


def _group(instance, run_id) -> list[dg.DagsterRun]:
    return sorted(instance.get_run_group(run_id)[1], key=lambda r: int(
        r.tags.get("dagster/retry_number", 0)))


def _kill_worker(instance, run_id, log, after=lambda: True) -> None:
    """SIGKILL RUN_ID's run worker once it has started (and AFTER holds): the spot loss. Only
    the worker: it shares its process group with the daemon and the code server here."""
    pid = wait_for(f"run {run_id}'s worker", lambda: worker_pid(instance, run_id), 120, log)
    wait_for(f"run {run_id} mid-sweep", after, 120, log)
    os.kill(pid, signal.SIGKILL)


def _failed(instance, run_id) -> bool:
    return instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


def _claimed_by(instance, run_id) -> list:
    info = instance.event_log_storage.get_concurrency_info("benchmark")
    return [s for s in info.claimed_slots if s.run_id == run_id]


def _finished(instance, run_ids) -> list | None:
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    return records if all(r.dagster_run.is_finished for r in records) else None


def _servers() -> bytes:
    return subprocess.run(["pgrep", "-f", f'"seed": {SEED}'], capture_output=True).stdout


def _summaries(bench, key) -> list[str]:
    return bench.store.list(f"runs/summary/deployment={key}/")


def test_killed_runs_are_retried_until_max_retries_then_marked(fleet):
    bench, keys, workspace, repo, log = fleet
    instance = bench.instance
    assert instance.run_retries_max_retries == 2  # the shipped local config's
    resumed, doomed = keys[0], keys[1]
    first = submit(instance, workspace, repo, resumed)
    doomed_runs = [submit(instance, workspace, repo, doomed)]
    # The doomed deployment loses every attempt's worker as soon as it starts.
    _kill_worker(instance, doomed_runs[0], log)

    # The resumed deployment loses its worker once its first workload is written, while the
    # sweep holds a `benchmark` pool slot.
    _kill_worker(instance, first, log, after=lambda: len(_summaries(bench, resumed)) >= 1
                 and _claimed_by(instance, first))
    measured_before = len(_summaries(bench, resumed))
    assert measured_before < WORKLOADS, "killed too late: the sweep had finished"
    wait_for("the killed run to fail", lambda: _failed(instance, first), 60, log)
    wait_for("the dead run's pool slot to be freed", lambda: not _claimed_by(instance, first),
             60, log)

    for attempt in (1, 2):
        before = doomed_runs[-1]
        wait_for(f"attempt {attempt - 1} to fail", lambda r=before: _failed(instance, r), 60, log)
        # Up to ~90 s more when Dagster's retry daemon misses the failure and
        # pipeline/missed_retries.py reports it again.
        doomed_runs.append(wait_for(f"retry {attempt}", lambda r=before: instance.get_run_by_id(
            r).tags.get("dagster/auto_retry_run_id"), 150, log))
        _kill_worker(instance, doomed_runs[-1], log)

    retry = wait_for("the resumed deployment's retry to succeed", lambda: next(
        (r for r in _group(instance, first) if r.status == dg.DagsterRunStatus.SUCCESS), None),
        240, log)
    assert retry.tags["dagster/retry_number"] == "1"
    assert retry.tags["servecat/hardware"] == "openai-cpu"
    [materialization] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("benchmark_runs"), asset_partitions=[resumed]), limit=10).records
    assert materialization.run_id == retry.run_id
    # The retry measured only what the killed run had not finished.
    assert materialization.asset_materialization.metadata["measured_now"].value == \
        WORKLOADS - measured_before
    with bench.resources()["warehouse"].connect(bench.store) as con:
        refresh_views(con, bench.store)
        rows = con.execute("SELECT count(*), count(DISTINCT config_id) FROM summary "
                           "WHERE deployment = ? AND status = 'ok'", [resumed]).fetchone()
        requests = con.execute("SELECT count(*) FROM requests WHERE deployment = ? "
                               "GROUP BY config_id", [resumed]).fetchall()
    assert rows == (WORKLOADS, WORKLOADS)
    assert [n for (n,) in requests] == [REQUESTS] * WORKLOADS

    # The doomed deployment's third loss ends it: no fourth run, and the last one says why.
    last = wait_for("the gave-up tag", lambda: GAVE_UP_TAG in _run(instance, doomed_runs[-1])
                    .tags and _run(instance, doomed_runs[-1]), 60, log)
    assert last.tags["dagster/will_retry"] == "false"
    assert last.tags[INTERRUPTIONS_TAG] == "3"
    assert "max_retries 2 used up" in last.tags[GAVE_UP_TAG]
    assert [r.run_id for r in _group(instance, doomed_runs[0])] == doomed_runs
    wait_for("every dead run's slot to be freed", lambda: not any(
        _claimed_by(instance, r) for r in [first, *doomed_runs]), 30, log)
    # Each server went with its run worker (it gets SIGTERM when its parent dies).
    wait_for("no scripted server left", lambda: not _servers(), 30, log)


def test_four_partitions_run_two_at_a_time_per_hardware_type(fleet):
    bench, keys, workspace, repo, log = fleet
    instance = bench.instance
    runs = [submit(instance, workspace, repo, key) for key in keys[2:6]]
    records = wait_for("four runs to finish", lambda: _finished(instance, runs), 300, log)
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    assert {r.dagster_run.tags["servecat/hardware"] for r in records} == {"openai-cpu"}
    # How many ran at once, from the run records' start and end times.
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records])
    running = [0]
    for _, step in edges:
        running.append(running[-1] + step)
    assert max(running) == 2, f"runs at once over time: {running}"
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert any(b[0] < a[1] for a, b in pairwise(spans)), "no two runs overlapped"
    assert all(len(_summaries(bench, k)) == WORKLOADS for k in keys[2:6])


def test_the_nightly_backfill_becomes_a_backfill_whose_run_has_hardware_tags(fleet):
    bench, keys, workspace, repo, log = fleet
    instance = bench.instance
    stale = keys[6]  # measured 40 days ago; keys[1] failed minutes ago: it waits a day
    measured = (datetime.now(UTC) - timedelta(days=40)).isoformat(timespec="seconds")
    bench.store.write_parquet(summary_path(stale, "old"), pa.table({
        "config_id": ["old"], "deployment": [stale], "workload_id": ["old"], "status": ["ok"],
        "measured_at": [measured], "servecat_version": [__version__]}))
    sensor = repo.get_sensor("stale_results_backfill")
    instance.start_sensor(sensor)
    try:
        backfill = wait_for("the backfill", lambda: next(
            (b for b in instance.get_backfills() if BACKFILL_TAG in b.tags), None), 120, log)
        assert backfill.tags["servecat/hardware"] == "openai-cpu"
        assert REMEASURE_TAG in backfill.tags
        assert backfill.asset_backfill_data.target_subset.get_partitions_subset(
            BENCHMARK_ASSET).get_partition_keys() == {stale}
        [run] = wait_for("the backfill's run", lambda: instance.get_runs(dg.RunsFilter(
            tags={"dagster/backfill": backfill.backfill_id})), 120, log)
    finally:
        instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
    assert run.tags["dagster/partition"] == stale
    assert run.tags["servecat/hardware"] == "openai-cpu" and run.tags[BACKFILL_TAG]
    # The UI's per-partition status of the backfill: the partition is requested.
    wait_for("the partition's status in the backfill", lambda: stale in _requested(
        instance, backfill.backfill_id), 60, log)


def _requested(instance, backfill_id) -> set[str]:
    subset = instance.get_backfill(backfill_id).asset_backfill_data.requested_subset
    partitions = subset.partitions_subsets_by_asset_key.get(BENCHMARK_ASSET)
    return set(partitions.get_partition_keys()) if partitions else set()
