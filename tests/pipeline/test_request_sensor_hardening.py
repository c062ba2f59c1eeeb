"""The benchmark-request sensor against poisoned requests put straight into the store (past the
API's checks): each is rejected with a reason that shows no server path, and the good request
queued behind them is accepted on the same tick."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from catalog.benchmark_requests import BenchmarkRequests
from pipeline.requests_sensor import REQUEST_TAG, benchmark_request_sensor
from resources.store import ResultStore

SHAPE = {"parameters": 1e6, "layers": 2, "kv_heads": 2, "head_dim": 16}
WORKLOADS = {"lengths": [{"name": "chat", "input_tokens": 16, "output_tokens": 4}],
             "loads": [{"concurrency": [1]}], "requests": 4}


@pytest.fixture
def env(tmp_path):
    store = ResultStore(root=str(tmp_path / "store"))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield instance, store, BenchmarkRequests(store.root)


def tick(instance: dg.DagsterInstance, store: ResultStore) -> dg.SensorResult:
    return benchmark_request_sensor(dg.build_sensor_context(instance=instance,
                                                            resources={"store": store}))


def assert_rejected_then_accepted(env, poisoned: dict, tmp_path: Path) -> dict[str, str]:
    """Queue a good request behind POISONED, run one tick: every poisoned request is rejected with
    a reason free of server paths, the good one accepted with its runs. Returns the reasons."""
    instance, store, requests = env
    good = requests.create("org/tiny-hub", {"model": SHAPE, "workloads": WORKLOADS})
    result = tick(instance, store)
    reasons = {name: requests.get(r.id).reason for name, r in poisoned.items()}
    assert {requests.get(r.id).status for r in poisoned.values()} == {"rejected"}, reasons
    for name, reason in reasons.items():
        if name not in ("missing-path", "no-config"):  # those echo the requester's own model
            for secret in (str(tmp_path), str(Path.cwd()), "/etc/passwd", "root:"):
                assert secret not in reason, (name, reason)
    accepted = requests.get(good.id)
    assert accepted.status == "accepted", accepted.reason
    keys = accepted.details["deployments"]
    assert len(keys) == 4 and [r.partition_key for r in result.run_requests] == keys
    assert {r.tags[REQUEST_TAG] for r in result.run_requests} == {good.id}
    [add] = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == sorted(keys)
    assert tick(instance, store).run_requests == []  # nothing pending; rejected rows trip nothing
    return reasons


def test_an_unreadable_row_is_rejected_and_the_queue_moves_on(env, tmp_path):
    _, _, requests = env
    corrupt = requests.create("org/m", {"workloads": WORKLOADS})
    with sqlite3.connect(requests.path) as db:  # a row no JSON reader can parse
        db.execute("UPDATE benchmark_requests SET matrix_overrides = '{not json' WHERE id = ?",
                   (corrupt.id,))
    reasons = assert_rejected_then_accepted(env, {"corrupt": corrupt}, tmp_path)
    assert reasons["corrupt"] == "matrix_overrides: must be a mapping of matrix spec fields"


def test_requests_that_break_expansion_are_rejected_and_the_queue_moves_on(env, tmp_path):
    _, store, requests = env
    grid = {"a": list(range(1000)), "b": list(range(1000)), "c": list(range(2000))}
    poisoned = {  # the huge integer first: code without these checks raises on it at once
        "huge-int": requests.create("org/m", {"model": SHAPE,
                                              "workloads": {**WORKLOADS, "requests": 10**30}}),
        "raises": requests.create("org/m", {"model": SHAPE, "workloads": WORKLOADS}),
        "grid": requests.create("org/m", {"model": SHAPE, "engines": [
            {"name": "builtin", "args": grid}]}),
    }
    # A real failure while handling one request: its spec file's place is taken by a folder.
    (Path(store.root) / "requests" / f"{poisoned['raises'].id}.yaml").mkdir(parents=True)
    reasons = assert_rejected_then_accepted(env, poisoned, tmp_path)
    assert reasons["huge-int"].startswith("matrix_overrides.workloads.requests: integer "
                                          "1000000000000000000000000000000 is too large")
    assert reasons["raises"] == "could not expand the request: IsADirectoryError: Is a directory"
    assert reasons["grid"].startswith("matrix_overrides: the matrix has 8,000,000,000 configs "
                                      "(4,000,000,000 deployments x 2 workloads), over the cap "
                                      "of 20,000")


def test_reasons_show_no_server_paths(env, tmp_path):
    _, _, requests = env
    missing, no_config = str(tmp_path / "nothing-here"), str(tmp_path)
    poisoned = {
        "extends": requests.create("org/m", {"extends": "/etc/passwd"}),
        "table": requests.create("org/m", {"hardware_table": "/etc/passwd"}),
        "option": requests.create("--help", {"model": SHAPE}),
        "no-shape": requests.create("org/no-shape", {"workloads": WORKLOADS}),
        "missing-path": requests.create(missing),
        "no-config": requests.create(no_config),
    }
    reasons = assert_rejected_then_accepted(env, poisoned, tmp_path)
    assert reasons["extends"].startswith("matrix_overrides.extends: refused")
    assert reasons["table"].startswith("matrix_overrides.hardware_table: refused")
    assert reasons["option"] == "model: '--help' must not start with '-'"
    assert reasons["no-shape"] == ("matrix_overrides.model.parameters: required for "
                                   "'org/no-shape': it is not a local model directory with a "
                                   "config.json (looked in <server path>)")
    # A missing folder and a folder without config.json read the same: no probing of paths.
    assert (reasons["missing-path"].replace(repr(missing), "M")
            == reasons["no-config"].replace(repr(no_config), "M"))
