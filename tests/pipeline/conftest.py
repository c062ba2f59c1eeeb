"""Fixtures for pipeline tests (helpers live in tests/pipeline/support.py)."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from resources.store import ResultStore
from tests.pipeline.support import Bench, scripted_command, spec_dict


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "daemon: starts the real dagster-daemon (slow, ~1-3 min); "
                                       "deselect with -m 'not daemon'")


@pytest.fixture
def bench_env(tmp_path, tiny_model):
    home = tmp_path / "home"
    home.mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(tiny_model)))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield Bench(tmp_path, instance, spec, ResultStore(root=str(tmp_path / "store")),
                    f"sqlite:///{tmp_path / 'mlflow.db'}",
                    {"openai": scripted_command({"ttft_ms": [2, 4], "gap_ms": [0.5, 1]})})
