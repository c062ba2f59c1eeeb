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
# the smoke runs of the benchmarks that count errors under load): `make test` runs them on
# their own, after the rest has run three at a time, so no other test's load moves what they
# measure. The kernel and engine benchmarks' smoke tests check only the shape of their tables
# and JSON, so they run with the rest.
SERIAL = frozenset({
    "tests/pipeline/test_capacity_pipeline.py",
    "tests/bench/test_capacity_search.py",
    "tests/bench/test_accuracy.py",
    "tests/bench/test_open_loop.py",
    "tests/bench/test_queueing.py",
    "tests/bench/test_validity.py",
    "tests/bench/test_perf_loadgen.py",
    "tests/bench/test_telemetry.py",
    "tests/catalog/test_perf_api.py",
})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: measures timings; run alone (`make test` runs "
                                       "these after the parallel part)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::")[0] in SERIAL:
            item.add_marker(pytest.mark.serial)
