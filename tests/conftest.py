"""Session-wide fixtures: one local test model built per test session, isolated homes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` random-weight Llama (GQA) with its tokenizer, built once per session."""
    from engine.local_models import build_model

    return build_model("tiny", tmp_path_factory.mktemp("models") / "tiny")


# Tests whose assertions hold timings against a queueing model, a script or a schedule (and
# the smoke run of the load generators' benchmark): `make test` runs them on their own, after
# the rest has run three at a time, so no other test's load moves what they measure. The
# kernel, engine and API benchmarks' smoke tests run with the rest: they check the shape of
# their tables and JSON, and the API's counts no errors at 5 requests/s with 60 s timeouts.
SERIAL = frozenset({
    "tests/pipeline/test_capacity_pipeline.py",
    "tests/bench/test_capacity_search.py",
    "tests/bench/test_accuracy.py",
    "tests/bench/test_open_loop.py",
    "tests/bench/test_queueing.py",
    "tests/bench/test_validity.py",
    "tests/bench/test_perf_loadgen.py",
    "tests/bench/test_telemetry.py",
})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: measures timings; run alone (`make test` runs "
                                       "these after the parallel part)")


# The modules holding the longest tests (30-80 s each when run three at a time), longest
# first. `make test` hands tests out one at a time in collection order (--maxschedchunk 1), so
# these start first and the short ones fill in around them: started last, one of them alone
# would set the part's end (seen: three Dagster-daemon tests ran last on one worker and ended
# 65 s after the other workers). A module missing here only runs in its usual place.
LONGEST_FIRST = (
    "tests/pipeline/test_vllm.py",
    "tests/pipeline/test_fleet_daemon.py",
    "tests/pipeline/test_catalog_refresh_daemon.py",
    "tests/pipeline/test_runs.py",
    "tests/pipeline/test_demo.py",
    "tests/engine/test_fuzz_server.py",
    "tests/pipeline/test_capacity_search_runs.py",
    "tests/catalog/test_validation_fixture.py",
    "tests/test_readme_tour.py",
    "tests/pipeline/test_catalog_refresh.py",
    "tests/pipeline/test_s3.py",
    "tests/bench/test_mc_tasks.py",
    "tests/engine/test_serve_cli.py",
    "tests/engine/test_core_process.py",
    "tests/engine/test_perf_engine.py",
    "tests/bench/test_results_cli.py",
    "tests/pipeline/test_estimates_asset.py",
    "tests/pipeline/test_backfills.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::")[0] in SERIAL:
            item.add_marker(pytest.mark.serial)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
